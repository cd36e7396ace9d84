/** Similarity explorer widget front end (anywidget ESM; placeholder). */
export default {
  render({ el }: { el: HTMLElement }) {
    el.textContent = 'similarity explorer';
  }
};

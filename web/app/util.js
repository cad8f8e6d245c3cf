// @ts-check
// Small helpers shared by the dashboard's modules.

/** @param {string} id @returns {any} */
export const $ = (id) => document.getElementById(id);
/** @param {string} name */
export const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
/** The root font size in CSS pixels (1rem). */
export const rem = () => parseFloat(getComputedStyle(document.documentElement).fontSize) || 16;

/**
 * A fresh copy of a <template>'s first element.
 * @param {string} id
 * @returns {HTMLElement}
 */
export function fromTemplate(id) {
  const tpl = /** @type {HTMLTemplateElement} */ (document.getElementById(id));
  return /** @type {HTMLElement} */ (tpl.content.firstElementChild?.cloneNode(true));
}
/**
 * Set the text of the element marked data-slot="name" inside root.
 * @param {Element} root @param {string} name @param {string} text
 */
export function slot(root, name, text) {
  const el = root.querySelector(`[data-slot="${name}"]`);
  if (el) el.textContent = text;
  return /** @type {HTMLElement | null} */ (el);
}

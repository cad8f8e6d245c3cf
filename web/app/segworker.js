// @ts-check
// The worker that draws the road segments and device dots on OffscreenCanvases
// (app/segdraw.js), off the page's main thread; app/segcanvas.js starts it.
import { Renderer } from './segdraw.js';

const scope = /** @type {any} */ (self);
const renderer = new Renderer((msg) => scope.postMessage(msg));
scope.onmessage = (/** @type {MessageEvent} */ e) => renderer.handle(e.data);

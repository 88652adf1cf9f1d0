// The touch-up brush's preview: strokes painted on a work-size copy of the alpha (at most
// MAX_WORK_SIDE px), with undo and redo. The arithmetic is the server's
// (cutout/imaging/brush.py), which replays the same strokes on the full-size alpha when they
// are saved: coverage c = clamp((radius - distance) / edge, 0, 1) with edge = max(softness *
// radius, 1 px), the maximum over a stroke's segments; erase a*(1-c), restore a+(255-a)*c.
// Strokes are kept resolution-free: points as fractions of width and height, the radius as a
// fraction of the width.

export const MAX_WORK_SIDE = 2048;

/** Raise *cover* (W x H) to one segment's coverage; return the box it touched, or null. */
function rasterize(cover, W, H, p0, p1, radius, edge) {
  const x0 = Math.max(0, Math.floor(Math.min(p0[0], p1[0]) - radius));
  const x1 = Math.min(W, Math.ceil(Math.max(p0[0], p1[0]) + radius));
  const y0 = Math.max(0, Math.floor(Math.min(p0[1], p1[1]) - radius));
  const y1 = Math.min(H, Math.ceil(Math.max(p0[1], p1[1]) + radius));
  if (x0 >= x1 || y0 >= y1) return null;
  const dx = p1[0] - p0[0];
  const dy = p1[1] - p0[1];
  const length2 = dx * dx + dy * dy;
  for (let y = y0; y < y1; y += 1) {
    const py = y + 0.5;
    for (let x = x0; x < x1; x += 1) {
      const px = x + 0.5;
      const t = length2 > 0 ? Math.min(1, Math.max(0, ((px - p0[0]) * dx + (py - p0[1]) * dy) / length2)) : 0;
      const distance = Math.hypot(px - (p0[0] + t * dx), py - (p0[1] + t * dy));
      const c = Math.min(1, Math.max(0, (radius - distance) / edge));
      const i = y * W + x;
      if (c > cover[i]) cover[i] = c;
    }
  }
  return [x0, y0, x1, y1];
}

const union = (a, b) => (!a ? b : !b ? a
  : [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[2], b[2]), Math.max(a[3], b[3])]);

export class BrushEditor {
  /** *photo* gives the colours (restore brings them back), *cutout* the current alpha. */
  constructor(canvas, photo, cutout) {
    const w = cutout.naturalWidth;
    const h = cutout.naturalHeight;
    const scale = Math.min(1, MAX_WORK_SIDE / Math.max(w, h));
    this.W = Math.max(1, Math.round(w * scale));
    this.H = Math.max(1, Math.round(h * scale));
    canvas.width = this.W;
    canvas.height = this.H;
    this.ctx = canvas.getContext("2d", { willReadFrequently: true });
    this.ctx.drawImage(photo, 0, 0, this.W, this.H);
    this.image = this.ctx.getImageData(0, 0, this.W, this.H);
    this.ctx.clearRect(0, 0, this.W, this.H);
    this.ctx.drawImage(cutout, 0, 0, this.W, this.H);
    const pixels = this.ctx.getImageData(0, 0, this.W, this.H).data;
    this.base = new Uint8ClampedArray(this.W * this.H);
    for (let i = 0; i < this.base.length; i += 1) this.base[i] = pixels[i * 4 + 3];
    this.alpha = this.base.slice();
    this.cover = new Float32Array(this.W * this.H);
    this.strokes = [];
    this.undone = [];
    this.current = null;
    this.render([0, 0, this.W, this.H]);
  }

  get dirty() { return this.strokes.length > 0; }
  get canUndo() { return this.strokes.length > 0; }
  get canRedo() { return this.undone.length > 0; }

  begin(mode, radius, softness, point) {
    this.end();
    this.current = { mode, radius, softness, points: [point] };
    this.start = this.alpha.slice();
    this.box = null;
    this.paint(point, point);
  }

  extend(point) {
    if (!this.current) return;
    const last = this.current.points.at(-1);
    this.current.points.push(point);
    this.paint(last, point);
  }

  /** Finish the stroke in progress; true if there was one. */
  end() {
    if (!this.current) return false;
    this.strokes.push(this.current);
    this.undone = [];
    this.clearCover(this.box);
    this.current = null;
    return true;
  }

  undo() {
    this.end();
    if (this.strokes.length) this.undone.push(this.strokes.pop());
    this.rebuild();
  }

  redo() {
    this.end();
    if (this.undone.length) this.strokes.push(this.undone.pop());
    this.rebuild();
  }

  /** The strokes to save, as the server takes them. */
  toJSON() {
    this.end();
    return { strokes: this.strokes.map(({ mode, radius, softness, points }) => ({ mode, radius, softness, points })) };
  }

  // -- internals -------------------------------------------------------------------------

  paint(p0, p1) {
    const { radius, softness } = this.current;
    const box = this.segment(p0, p1, radius, softness);
    if (!box) return;
    this.box = union(this.box, box);
    this.applyCover(box, this.start, this.current.mode);
    this.render(box);
  }

  segment(p0, p1, radius, softness) {
    const r = radius * this.W;
    const toWork = (p) => [p[0] * this.W, p[1] * this.H];
    return rasterize(this.cover, this.W, this.H, toWork(p0), toWork(p1), r, Math.max(softness * r, 1));
  }

  applyCover(box, start, mode) {
    const [x0, y0, x1, y1] = box;
    for (let y = y0; y < y1; y += 1) {
      for (let i = y * this.W + x0, end = y * this.W + x1; i < end; i += 1) {
        const c = this.cover[i];
        const a = start[i];
        this.alpha[i] = mode === "erase" ? a * (1 - c) : a + (255 - a) * c;
      }
    }
  }

  clearCover(box) {
    if (!box) return;
    const [x0, y0, x1, y1] = box;
    for (let y = y0; y < y1; y += 1) this.cover.fill(0, y * this.W + x0, y * this.W + x1);
  }

  rebuild() {
    this.alpha = this.base.slice();
    for (const stroke of this.strokes) {
      let box = null;
      const points = stroke.points.length > 1 ? stroke.points : [stroke.points[0], stroke.points[0]];
      for (let k = 1; k < points.length; k += 1) {
        box = union(box, this.segment(points[k - 1], points[k], stroke.radius, stroke.softness));
      }
      if (box) {
        this.applyCover(box, this.alpha.slice(), stroke.mode);
        this.clearCover(box);
      }
    }
    this.render([0, 0, this.W, this.H]);
  }

  render(box) {
    const [x0, y0, x1, y1] = box;
    const data = this.image.data;
    for (let y = y0; y < y1; y += 1) {
      for (let i = y * this.W + x0, end = y * this.W + x1; i < end; i += 1) data[i * 4 + 3] = this.alpha[i];
    }
    this.ctx.putImageData(this.image, 0, 0, x0, y0, x1 - x0, y1 - y0);
  }
}

// Drives the npm package `remove.bg` (1.3.0, unchanged) through every input mode and the
// options it sends; prints one JSON line per call. The package hard-codes
// https://api.remove.bg, so tests/redirect.py runs this script where that name is our server.
// Usage: node remove_bg_npm.js PHOTO PHOTO_URL MISSING_URL OUT_DIR  (the key in REMOVE_BG_KEY)
"use strict";
const fs = require("fs");
const path = require("path");
const rbg = require("remove.bg");

const [photo, photoUrl, missingUrl, out] = process.argv.slice(2);
const apiKey = process.env.REMOVE_BG_KEY;
const base64img = fs.readFileSync(photo).toString("base64");
const file = (name) => path.join(out, name);

const calls = [
  ["file", () => rbg.removeBackgroundFromImageFile({ path: photo, apiKey, outputFile: file("file.png") })],
  ["file_full_crop", () => rbg.removeBackgroundFromImageFile({
    path: photo, apiKey, size: "full", type: "product", crop: true, crop_margin: "10px",
    outputFile: file("file_full_crop.png"),
  })],
  ["url_bg_color", () => rbg.removeBackgroundFromImageUrl({
    url: photoUrl, apiKey, size: "regular", bg_color: "81d4fa", outputFile: file("url_bg_color.jpg"),
  })],
  ["base64_alpha", () => rbg.removeBackgroundFromImageBase64({
    base64img, apiKey, size: "hd", channels: "alpha", roi: "0% 0% 100% 100%", add_shadow: true,
    outputFile: file("base64_alpha.png"),
  })],
  ["url_scale_bg_image", () => rbg.removeBackgroundFromImageUrl({
    url: photoUrl, apiKey, size: "medium", scale: "50%", position: "center",
    bg_image_url: photoUrl, outputFile: file("url_scale_bg_image.jpg"),
  })],
  // A refused upload larger than 64 KiB, then at once another call on the kept-alive socket.
  ["bad_key", () => rbg.removeBackgroundFromImageBase64({ base64img, apiKey: "cut_not-a-key" })],
  ["not_an_image", () => rbg.removeBackgroundFromImageBase64({ base64img: "aGVsbG8=", apiKey })],
  ["missing_url", () => rbg.removeBackgroundFromImageUrl({ url: missingUrl, apiKey })],
];

(async () => {
  for (const [name, call] of calls) {
    try {
      const result = await call();
      delete result.base64img; // the image is in outputFile
      console.log(JSON.stringify({ name, ok: true, result }));
    } catch (errors) {
      console.log(JSON.stringify({ name, ok: false, errors: errors === undefined ? null : errors }));
    }
  }
})();

// Before/after on each history card: the two thumbnails stacked, the original clipped at a
// position set by a range input laid over them. A native range input gives mouse, touch and
// keyboard (arrows, Page Up/Down, Home/End) handling and is announced as a slider.

export function enhanceCard(card) {
  const pair = card.querySelector(".pair");
  if (!pair || pair.classList.contains("compare")) return;
  const name = card.querySelector(".record-name").textContent.trim();
  pair.classList.add("compare");
  const line = Object.assign(document.createElement("div"), { className: "compare-line" });
  line.setAttribute("aria-hidden", "true");
  const range = Object.assign(document.createElement("input"), {
    type: "range", min: "0", max: "100", step: "1", value: "50", className: "compare-range",
  });
  range.setAttribute("aria-label", `Before and after: ${name}`);
  const update = () => {
    // A custom property set through CSSOM: allowed by the CSP, unlike a style attribute.
    pair.style.setProperty("--pos", `${range.value}%`);
    range.setAttribute("aria-valuetext", `${range.value}% original, ${100 - range.value}% cut-out`);
  };
  range.addEventListener("input", update);
  update();
  // Labels drawn over both pictures (the figures' own captions stay, for assistive tech).
  const label = (side, text) => Object.assign(document.createElement("span"), { className: `compare-label compare-label-${side}`, textContent: text });
  const labels = [label("before", "Original"), label("after", "Cut-out")];
  labels.forEach((l) => l.setAttribute("aria-hidden", "true"));
  pair.append(line, ...labels, range);
}

export function enhanceAll(root = document) {
  root.querySelectorAll(".record").forEach(enhanceCard);
}

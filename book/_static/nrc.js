/* nrc book: click a figure to see it at full size; click again or press Escape to close.
   On a narrow screen the enlarged figure is drawn 1100 px wide and scrolls, so its text is as
   large as on a laptop. */
(function () {
  "use strict";
  function close(box) { if (box && box.parentNode) box.parentNode.removeChild(box); }
  function open(img) {
    var box = document.createElement("div");
    box.className = "nrc-lightbox" + (window.innerWidth < 720 ? " nrc-lightbox-wide" : "");
    box.setAttribute("role", "dialog");
    box.setAttribute("aria-label", img.alt || "figure");
    var big = document.createElement("img");
    big.src = img.currentSrc || img.src;
    big.alt = img.alt || "";
    box.appendChild(big);
    box.addEventListener("click", function () { close(box); });
    document.addEventListener("keydown", function esc(e) {
      if (e.key === "Escape") { close(box); document.removeEventListener("keydown", esc); }
    });
    document.body.appendChild(box);
  }
  document.addEventListener("click", function (e) {
    var img = e.target;
    if (!img || img.tagName !== "IMG" || !img.closest(".bd-article") || img.closest("a") ||
        !(img.closest(".cell_output, figure") || /_images\//.test(img.getAttribute("src") || ""))) return;
    e.preventDefault();
    open(img);
  });
})();

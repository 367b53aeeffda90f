// The console's own script: the upload box (drag and drop, or the file
// picker) and "select all" on the dead letters. Everything else is htmx.
"use strict";

function describeFile(input, text) {
  const f = input.files && input.files[0];
  text.textContent = f
    ? `${f.name}, ${f.size.toLocaleString("en")} bytes: choose what happens next, then Upload.`
    : text.dataset.empty;
}

function setUpDropzone(root) {
  const zone = root.querySelector("#dropzone");
  if (!zone || zone.dataset.ready) return;
  zone.dataset.ready = "1";
  const input = zone.querySelector("input[type=file]");
  const text = zone.querySelector("#dz-text");
  text.dataset.empty = text.textContent;
  input.addEventListener("change", () => describeFile(input, text));
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files.length > 0) {
      input.files = e.dataTransfer.files;
      describeFile(input, text);
    }
  });
}

function setUpSelectAll(root) {
  const all = root.querySelector("#select-all");
  if (!all || all.dataset.ready) return;
  all.dataset.ready = "1";
  all.addEventListener("change", () => {
    for (const box of document.querySelectorAll("input[name=pos]:not(:disabled)")) {
      box.checked = all.checked;
    }
  });
}

function setUp(root) {
  setUpDropzone(root);
  setUpSelectAll(root);
}

document.addEventListener("DOMContentLoaded", () => setUp(document));
document.addEventListener("htmx:afterSettle", (e) => setUp(e.target));
// A successful upload clears the file, so the next one is chosen afresh.
document.addEventListener("htmx:afterRequest", (e) => {
  const form = e.target.closest && e.target.closest("#upload-form");
  if (form && e.detail.successful) {
    form.reset();
    const input = form.querySelector("input[type=file]");
    describeFile(input, form.querySelector("#dz-text"));
  }
});

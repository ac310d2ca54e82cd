// DOM pieces the 1:1 page and the rooms share: file lists with per-file
// status, an offer's list, and Save links for files kept in the browser's
// storage. Peer-supplied text goes in as textContent only.

export const bytes = (n) => (n < 1e3 ? `${Math.round(n)} B` : n < 1e6 ? `${(n / 1e3).toFixed(1)} kB` : `${(n / 1e6).toFixed(1)} MB`);

/** One line per file, numbered by `data-file`. */
export function renderFiles(list, files, label) {
  list.replaceChildren(...files.map((f, i) => {
    const li = document.createElement('li');
    li.dataset.file = String(i);
    li.textContent = `${label(f)} (${bytes(f.size)})`;
    return li;
  }));
}

export function markFile(list, i, text, cls) {
  const li = list.children[i];
  if (!li) return;
  li.dataset.status = cls;
  li.querySelector('.status')?.remove();
  const span = document.createElement('span');
  span.className = 'status';
  span.textContent = ` ${text}`;
  li.append(span);
}

/** The offer's files as list items (the first 50, then a count). */
export function offerItems(files) {
  const shown = files.slice(0, 50).map((f) => {
    const li = document.createElement('li');
    li.textContent = `${f.parts.join('/')} (${bytes(f.size)})`;
    return li;
  });
  if (files.length > 50) {
    const li = document.createElement('li');
    li.textContent = `…and ${files.length - 50} more`;
    shown.push(li);
  }
  return shown;
}

/** A list item with a Save link for file `i` of receiver `r`. */
export function saveItem(r, i, f) {
  const link = document.createElement('a');
  link.href = '#';
  link.download = f.parts[f.parts.length - 1];
  link.textContent = `Save ${f.parts.join('/')} (${bytes(f.size)})`;
  link.onclick = saveClick(link, r, i);
  const li = document.createElement('li');
  li.append(link);
  return li;
}

/** The click handler of a Save link: makes the object URL, lets the
 * download start with a second, synthetic click, revokes it soon after.
 * Always application/octet-stream, under the safe name. */
export function saveClick(link, r, i) {
  return async (e) => {
    if (link.dataset.ready) return;
    e.preventDefault();
    const file = await r.sink.file(i);
    const url = URL.createObjectURL(new Blob([file], { type: 'application/octet-stream' }));
    link.href = url;
    link.dataset.ready = '1';
    link.click();
    setTimeout(() => {
      URL.revokeObjectURL(url);
      link.href = '#';
      delete link.dataset.ready;
    }, 10_000);
  };
}

/** Files from an <input>: paths relative to the chosen folder if any. */
export const fromInput = (input) => Array.from(input.files, (file) => ({ file, path: file.webkitRelativePath || file.name }));

/** Files and folders dropped: folders walked (FileSystemEntry API). */
export async function fromDrop(dataTransfer) {
  const items = dataTransfer.items;
  if (!items?.length || !items[0].webkitGetAsEntry) return Array.from(dataTransfer.files, (file) => ({ file, path: file.name }));
  const out = [];
  const walk = async (entry, prefix) => {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      out.push({ file, path: `${prefix}${entry.name}` });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (batch.length === 0) break;
        for (const child of batch) await walk(child, `${prefix}${entry.name}/`);
      }
    }
  };
  const entries = Array.from(items, (it) => it.webkitGetAsEntry?.()).filter(Boolean);
  for (const e of entries) await walk(e, '');
  return out;
}

// Minimal /signal client: create or join, then report pairing. The full
// client (PQ handshake, WebRTC, file transfer) builds on the same protocol,
// documented in docs/PROTOCOL.md.
const status = document.getElementById('status');
const code = document.getElementById('code');
const show = (text, isError = false) => {
  status.textContent = text;
  status.className = isError ? 'error' : '';
};

const url = new URL('/signal', location.href);
url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
const ws = new WebSocket(url);
ws.onopen = () => show('Connected. Create a code or type one.');
ws.onclose = (e) => show(`Disconnected (${e.code} ${e.reason || ''})`, e.code !== 1000);
ws.onmessage = (e) => {
  const m = JSON.parse(e.data);
  switch (m.type) {
    case 'welcome': break;
    case 'created':
      code.textContent = m.nameplate;
      show(`Tell your peer this code. It expires in ${Math.round(m.expires_in_secs / 60)} min.`);
      break;
    case 'joined': show('Joined.'); break;
    case 'paired': show('Paired with your peer.'); break;
    case 'peer_away': show('Your peer lost its connection; waiting for it to come back.'); break;
    case 'peer_back': show('Your peer is back.'); break;
    case 'peer_left': show(`Your peer left (${m.reason}).`, true); break;
    case 'error': show(`${m.message} [${m.code}]`, true); break;
    default: break;
  }
};
const send = (obj) => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify(obj));
document.getElementById('create').onclick = () => send({ type: 'create' });
document.getElementById('join').onclick = () => {
  const v = document.getElementById('nameplate').value.trim().split('-')[0];
  send({ type: 'join', nameplate: v });
};

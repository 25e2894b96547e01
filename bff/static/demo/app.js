// The demo storefront: every widget of the coupon BFF against its real API.
// Plain JavaScript, no build step and nothing fetched from outside this server.
// Read it as a worked example: each section names the calls it makes, and the
// "API calls" panel at the bottom lists them as they happen.
'use strict';

(() => {
  // ---- small DOM helpers ----------------------------------------------------
  const $ = (selector) => document.querySelector(selector);
  function el(tag, attrs, ...kids) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value == null || value === false) continue;
      if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else if (key === 'dataset') Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    (function add(list) {
      for (const kid of list) {
        if (kid == null || kid === false || kid === '') continue;
        if (Array.isArray(kid)) add(kid);
        else node.append(kid instanceof Node ? kid : String(kid));
      }
    })(kids);
    return node;
  }
  const show = (node, visible) => node.classList.toggle('hidden', !visible);

  // ---- formatting -------------------------------------------------------------
  const yuan = (cents) => '¥' + (cents / 100).toFixed(2);
  const shortYuan = (cents) => '¥' + (cents % 100 ? (cents / 100).toFixed(2) : String(cents / 100));
  const plural = (n, one, many) => `${n} ${n === 1 ? one : (many || one + 's')}`;
  // Times read in the shop's time zone (shop.timezone, as /demo/config.json says), the
  // zone its daily limits and live streams are planned in, whatever the browser's is.
  let shopClock = null;
  function shopFormat() {
    if (shopClock) return shopClock;
    const options = { year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' };
    try {
      shopClock = new Intl.DateTimeFormat('en-CA', { ...options, timeZone: state.config.shop_timezone });
    } catch (err) {  // a zone this browser does not know: its own, rather than nothing
      shopClock = new Intl.DateTimeFormat('en-CA', options);
    }
    return shopClock;
  }
  function shopZone() {
    const zone = shopFormat().resolvedOptions().timeZone;
    let offset = '';
    try {
      const named = new Intl.DateTimeFormat('en-US', { timeZone: zone, timeZoneName: 'shortOffset' }).formatToParts(new Date());
      offset = (named.find((p) => p.type === 'timeZoneName') || {}).value || '';
    } catch (err) { /* older browsers: the zone's name alone */ }
    return offset ? `${zone}, ${offset}` : zone;
  }
  function when(iso) {
    const parts = Object.fromEntries(shopFormat().formatToParts(new Date(iso)).map((p) => [p.type, p.value]));
    return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}`;
  }
  // "2 coupons and a gift": a pack's gift is not one of its coupons.
  function packContents(coupons, gifts) {
    return [coupons ? plural(coupons, 'coupon') : '', gifts ? (gifts === 1 ? 'a gift' : plural(gifts, 'gift')) : '']
      .filter(Boolean).join(' and ');
  }
  function productName(id) {
    const product = state.products.get(id);
    return product ? product.title : id;
  }
  function benefitText(b) {
    switch (b.type) {
      case 'threshold': return `${shortYuan(b.amount_off)} off orders of ${shortYuan(b.threshold)} or more`;
      case 'no_threshold': return `${shortYuan(b.amount_off)} off, no minimum`;
      case 'discount': {
        const off = 100 - b.rate_permille / 10;
        return `${off}% off` + (b.threshold ? ` from ${shortYuan(b.threshold)}` : '') +
          (b.max_off ? `, at most ${shortYuan(b.max_off)}` : '');
      }
      case 'exchange': return `Buy ${productName(b.product_id)} for ${yuan(b.price)}`;
      case 'gift': return `Gift: ${productName(b.product_id)} for ¥0.01`;
      default: return b.type;
    }
  }
  function benefitBadge(b) {
    switch (b.type) {
      case 'threshold': case 'no_threshold': return shortYuan(b.amount_off);
      case 'discount': return `${b.rate_permille / 100}折`;
      case 'exchange': return '换购';
      case 'gift': return '赠品';
      default: return '券';
    }
  }
  function validityText(v) {
    if (v.type === 'absolute') return `usable ${when(v.start)} – ${when(v.end)}`;
    const start = v.effective_after_days ? `from day ${v.effective_after_days} ` : '';
    return `usable ${start}for ${v.valid_days} day${v.valid_days === 1 ? '' : 's'} after claiming`;
  }
  const SOURCES = {
    widget: 'claimed', auto: 'auto-claimed', gift_pack: 'from a gift pack',
    points: 'bought with points', code: 'from a code', grant: 'sent by the shop',
  };

  // ---- errors, as a person would want them ------------------------------------
  const MESSAGES = {
    SOLD_OUT: 'Sold out: every one of these coupons has been claimed.',
    DAILY_SOLD_OUT: "Today's coupons are all gone. Come back tomorrow.",
    LIMIT_REACHED: 'You already have this coupon.',
    ALREADY_CLAIMED: 'You already have this coupon.',
    WALLET_FULL: 'Your coupon wallet is full. Use some coupons first, then try again.',
    NOT_STARTED: 'Not open yet.',
    CLAIM_ENDED: 'Sorry, this offer has ended.',
    NOT_ELIGIBLE: 'This one is for members only.',
    RISK_REJECTED: "We couldn't verify this device. Please try again from the app.",
    RATE_LIMITED: 'Too many taps at once. Please wait a moment.',
    INSUFFICIENT_POINTS: "You don't have enough points for this.",
    CLAIM_PAUSED: 'The shop has paused this coupon for now.',
    CLAIM_METHOD_NOT_ALLOWED: "This coupon can't be claimed here.",
    REQUEST_IN_PROGRESS: 'Still working on your last tap…',
    IDEMPOTENCY_CONFLICT: 'Something went wrong with that tap. Please try again.',
    COUPON_NOT_USABLE: "That coupon can't be used on this order.",
    UNAUTHENTICATED: 'Please sign in first.',
    FORBIDDEN: "You can't do that here.",
    NOT_FOUND: "We couldn't find that.",
    VALIDATION_FAILED: 'Please check what you entered.',
    UNAVAILABLE: 'The shop is busy right now. Please try again in a moment.',
    NETWORK: "The shop can't be reached. Check your connection and try again.",
  };
  // Per action, where the same code means something more specific.
  const CONTEXT_MESSAGES = {
    code: { NOT_FOUND: "We don't know this code. Check it and try again.",
      ALREADY_CLAIMED: 'This code has already been used.' },
    pack: { ALREADY_CLAIMED: 'You already claimed this gift pack.',
      SOLD_OUT: 'Sorry, this gift pack has run out.' },
    points: { LIMIT_REACHED: 'You already exchanged points for this coupon.',
      NOT_ELIGIBLE: 'Join the membership to exchange points.' },
  };
  function humanError(error, context) {
    const code = error.code || 'INTERNAL';
    const specific = (CONTEXT_MESSAGES[context] || {})[code];
    if (specific) return specific;
    const details = error.details || {};
    if (code === 'NOT_STARTED' && details.starts_at) return `Not open yet: it opens ${when(details.starts_at)}.`;
    if (code === 'NOT_ELIGIBLE' && details.reason) return `Not for you yet: ${details.reason}.`;
    if (code === 'RATE_LIMITED' && error.retryAfter) return `Too many taps at once. Try again in ${error.retryAfter} s.`;
    if (code === 'COUPON_NOT_USABLE' && details.reason) return `That coupon can't be used on this order (${details.reason}).`;
    return MESSAGES[code] || error.message || 'Something went wrong. Please try again.';
  }

  // ---- the API ------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, code, message, details, retryAfter) {
      super(message || code);
      Object.assign(this, { status, code, details: details || {}, retryAfter });
    }
  }
  const state = {
    config: null, token: null, userId: null, productId: null, liveRoom: false,
    products: new Map(), templates: new Map(), coupons: new Map(), walletStatus: 'usable',
    popups: [], popupPack: null, log: [],
  };
  const shop = (path) => `/api/v1/shops/${encodeURIComponent(state.config.shop_id)}${path}`;

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (state.token) headers.Authorization = 'Bearer ' + state.token;
    const started = performance.now();
    let response;
    try {
      response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      logCall(method, path, 'network error', started);
      throw new ApiError(0, 'NETWORK', String(err));
    }
    logCall(method, path, response.status, started);
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (err) { data = null; }
    if (!response.ok) {
      const error = (data && data.error) || {};
      const failure = new ApiError(response.status, error.code || `HTTP_${response.status}`,
        error.message, error.details, response.headers.get('Retry-After'));
      if (response.status === 401 && state.token) {
        setToken(null);
        banner('Your session has ended. Press "New shopper" to sign in again.');
        refreshAll();
      }
      throw failure;
    }
    return data;
  }
  function logCall(method, path, status, started) {
    const ms = Math.round(performance.now() - started);
    const list = $('#api-log');
    const ok = typeof status === 'number' && status < 400;
    list.prepend(el('li', { class: ok ? '' : 'bad' }, el('code', {}, `${method} ${path}`), ` → ${status} (${ms} ms)`));
    while (list.children.length > 40) list.lastChild.remove();
    state.log.push(1);
    $('#log-count').textContent = `(${state.log.length})`;
  }
  function randomHex(bytes) {
    const values = crypto.getRandomValues(new Uint8Array(bytes));
    return Array.from(values, (v) => v.toString(16).padStart(2, '0')).join('');
  }
  // Every write that issues or spends carries a fresh request id: a retry of the same tap
  // would reuse it, so the server never issues twice.
  const requestId = (kind) => `${kind}-${randomHex(8)}`;
  function device() {
    let id = localStorage.getItem('bff-demo-device');
    if (!id) { id = 'web-' + randomHex(8); localStorage.setItem('bff-demo-device', id); }
    return { id };
  }

  // ---- feedback -------------------------------------------------------------------
  // One message at a time, in the status line of the sticky top bar: a new one replaces
  // the last, so messages never pile up over the page's buttons.
  let toastTimer = null;
  function toast(text, kind) {
    const node = el('div', { class: 'toast ' + (kind || 'ok'), role: kind === 'error' ? 'alert' : 'status' }, text);
    $('#toasts').replaceChildren(node);
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => node.remove(), kind === 'error' ? 10000 : 6000);
  }
  const failed = (error, context) => toast(humanError(error, context), 'error');
  function banner(text) {
    const node = $('#banner');
    node.textContent = text || '';
    show(node, !!text);
  }
  const needSignIn = (what) => el('p', { class: 'muted' }, `Press "New shopper" to sign in and see ${what}.`);

  // ---- session --------------------------------------------------------------------
  function decode(token) {
    try {
      const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      return JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
    } catch (err) { return null; }
  }
  function setToken(token) {
    const claims = token ? decode(token) : null;
    if (token && (!claims || (claims.exp && claims.exp * 1000 < Date.now()))) {
      banner('That sign-in link has expired. Press "New shopper", or run python run.py --demo again.');
      token = null;
    }
    state.token = token;
    state.userId = token ? claims.sub : null;
    if (token) sessionStorage.setItem('bff-demo-token', token);
    else sessionStorage.removeItem('bff-demo-token');
    $('#who').textContent = state.userId ? `Signed in as ${state.userId}` : 'Not signed in';
    show($('#sign-out'), !!token);
  }
  function tokenFromLocation() {
    const params = new URLSearchParams(location.hash.slice(1));
    const token = params.get('token');
    if (token) history.replaceState(null, '', location.pathname + location.search);
    return token;
  }
  async function newShopper() {
    if (!state.config.dev_sign_in) {
      toast('Sign-in is off on this server. Start it with python run.py --demo, or open the link it prints.', 'error');
      return;
    }
    try {
      const reply = await api('POST', '/api/v1/session', { auth_code: `dev:demo-${randomHex(4)}` });
      setToken(reply.token);
      banner('');
      toast(`Welcome, ${reply.user_id}!`);
      await refreshAll();
    } catch (error) { failed(error); }
  }

  // ---- product list (list page prices) -----------------------------------------------
  async function loadProducts() {
    const ids = state.config.product_ids;
    const missing = ids.filter((id) => !state.products.has(id));
    await Promise.all(missing.map(async (id) => {
      try { state.products.set(id, (await api('GET', shop(`/products/${id}`))).product); } catch (err) { /* left out */ }
    }));
  }
  async function renderList() {
    const box = $('#product-list');
    try {
      const reply = await api('POST', shop('/prices'), { items: state.config.product_ids.map((id) => ({ product_id: id, quantity: 1 })) });
      box.replaceChildren(...reply.items.map(({ product_id: id, price }) => el('li', {},
        el('button', { type: 'button', class: 'product-card' + (id === state.productId ? ' current' : ''), onclick: () => openProduct(id, false), dataset: { product: id } },
          el('span', { class: 'thumb', 'aria-hidden': 'true' }, productName(id).slice(0, 1)),
          el('span', { class: 'title' }, productName(id)),
          price.final_price < price.list_price ? el('s', { class: 'muted' }, yuan(price.list_price)) : '',
          el('span', { class: 'final' }, el('small', {}, '券后 '), yuan(price.final_price))))));
      if (!reply.items.length) box.replaceChildren(el('li', { class: 'muted' }, 'No products yet: run python run.py --demo.'));
    } catch (error) { box.replaceChildren(el('li', { class: 'error' }, humanError(error))); }
  }

  // ---- product detail, with auto-claim on open -----------------------------------------
  async function openProduct(id, liveRoom, autoClaim = true) {
    state.productId = id;
    state.liveRoom = !!liveRoom;
    const box = $('#detail');
    if (autoClaim) box.replaceChildren(el('p', { class: 'muted' }, 'Loading…'));
    document.querySelectorAll('.product-card').forEach((c) => c.classList.toggle('current', c.dataset.product === id));
    const room = liveRoom ? `?live_room_id=${encodeURIComponent(state.config.live_room_id)}` : '';
    let detail;
    try { detail = await api('GET', shop(`/products/${id}${room}`)); } catch (error) {
      box.replaceChildren(el('p', { class: 'error' }, humanError(error)));
      return;
    }
    state.products.set(id, detail.product);
    let price = detail.price;
    let autoClaimed = [];
    if (state.token && autoClaim) {
      // 自动领券: opening the page claims the product's auto-claim coupons the user may
      // still take; calling it again issues nothing new.
      try {
        const reply = await api('POST', shop(`/products/${id}/auto-claim`), { request_id: requestId('open') });
        autoClaimed = reply.claimed;
        if (!liveRoom) price = reply.price;
        for (const coupon of reply.claimed) state.coupons.set(coupon.coupon_id, coupon);
        if (autoClaimed.length) {
          toast(`Auto-claimed on open: ${autoClaimed.map((c) => c.name).join(', ')}`);
          renderWallet();
        }
      } catch (error) { failed(error); }
    }
    const widget = await widgetFor(id);
    if (state.productId !== id) return;
    renderDetail(detail.product, price, autoClaimed, widget);
  }
  const refreshProduct = () => state.productId && openProduct(state.productId, state.liveRoom, false);
  function couponLabel(applied) {
    if (applied.coupon_id != null) {
      const coupon = state.coupons.get(applied.coupon_id);
      return coupon ? coupon.name : `coupon #${applied.coupon_id}`;
    }
    const template = state.templates.get(applied.template_id);
    return template ? template.name : `coupon #${applied.template_id}`;
  }
  function renderDetail(product, price, autoClaimed, widget) {
    const better = price.final_price < price.list_price;
    const rows = [
      el('div', { class: 'price-row' }, el('span', {}, 'List price'), el(better ? 's' : 'span', { class: 'list-price' }, yuan(price.list_price))),
      price.promo_price != null ? el('div', { class: 'price-row' }, el('span', {}, 'Store promotion 店铺优惠'), el('span', { class: 'promo-price' }, yuan(price.promo_price))) : '',
      price.exclusive_price != null ? el('div', { class: 'price-row' }, el('span', {}, 'Live exclusive 直播专享价'), el('span', { class: 'promo-price' }, yuan(price.exclusive_price))) : '',
      el('div', { class: 'price-row final-row' }, el('span', {}, price.exclusive_price != null ? 'You pay' : '券后价 Post-coupon price'), el('strong', { class: 'final-price', id: 'final-price' }, yuan(price.final_price))),
      price.saving > 0 ? el('div', { class: 'saving' }, `You save ${yuan(price.saving)}`) : '',
    ];
    const used = price.coupons.map((applied) => el('li', {},
      el('span', {}, couponLabel(applied), ' ', el('span', { class: 'muted' }, `−${yuan(applied.discount)}`)),
      applied.needs_claim && applied.template_id != null && state.templates.has(applied.template_id)
        ? el('button', { type: 'button', class: 'primary small', onclick: () => claim(applied.template_id) }, 'Claim & save')
        : el('span', { class: 'tag' }, applied.needs_claim ? 'to claim' : 'in your wallet')));
    $('#detail').replaceChildren(...[
      el('h3', { id: 'detail-title' }, product.title),
      el('div', { class: 'price-box' }, rows),
      state.liveRoom
        ? el('p', { class: 'muted' }, 'Priced as an order from the live room: coupons do not apply to the exclusive price. ',
          el('button', { type: 'button', class: 'link', onclick: () => openProduct(product.product_id, false) }, 'Back to the normal price'))
        : '',
      price.coupons.length ? [el('h4', {}, 'Coupons in this price'), el('ul', { class: 'applied' }, used)] : '',
      autoClaimed.length ? el('p', { class: 'note' }, 'Auto-claimed when you opened this page: ', autoClaimed.map((c) => c.name).join(', ')) : '',
      !state.token ? el('p', { class: 'muted' }, 'Signed-in shoppers get this product\'s auto-claim coupons the moment they open it.') : '',
      el('h4', {}, 'Coupons for this product'),
      widgetList(widget, 'product'),
    ].flat().filter(Boolean));
  }

  // ---- the claim widget --------------------------------------------------------------
  const STATE_LABELS = {
    claimable: 'Claim', claimed: 'Claimed', sold_out: 'Sold out', not_started: 'Not started',
    ended: 'Ended', not_eligible: 'Members only', wallet_full: 'Wallet full',
  };
  async function widgetFor(productId) {
    const query = productId ? `?product_id=${encodeURIComponent(productId)}` : '';
    try {
      const reply = await api('GET', shop('/claim-widget' + query));
      for (const coupon of reply.coupons) state.templates.set(coupon.template_id, coupon);
      return reply;
    } catch (error) { return { error }; }
  }
  function widgetList(reply, where) {
    if (reply.error) return el('p', { class: 'error' }, humanError(reply.error));
    if (!reply.coupons.length) return el('p', { class: 'muted' }, 'No coupons here.');
    return el('ul', { class: 'coupons' }, reply.coupons.map((c) => el('li', { class: 'coupon state-' + c.state, dataset: { template: c.template_id, state: c.state } },
      el('div', { class: 'badge' }, benefitBadge(c.benefit)),
      el('div', { class: 'body' },
        el('strong', { class: 'name' }, c.name),
        el('span', {}, benefitText(c.benefit)),
        el('span', { class: 'muted' }, [c.description, validityText(c.validity)].filter(Boolean).join(' · ')),
        c.held ? el('span', { class: 'tag' }, `You have ${c.held}`) : '',
        c.remaining != null && c.remaining <= 20 && c.state === 'claimable' ? el('span', { class: 'tag hot' }, `Only ${c.remaining} left`) : ''),
      el('button', {
        type: 'button', class: c.state === 'claimable' ? 'primary' : '',
        disabled: c.state !== 'claimable', dataset: { where },
        onclick: () => claim(c.template_id),
      }, STATE_LABELS[c.state] || c.state))));
  }
  async function renderWidget() {
    $('#widget').replaceChildren(widgetList(await widgetFor(null), 'shop'));
  }
  async function claim(templateId) {
    if (!state.token) { toast('Please sign in first: press "New shopper".', 'error'); return; }
    const template = state.templates.get(templateId);
    try {
      const reply = await api('POST', shop('/coupons/claim'), { template_id: templateId, request_id: requestId('claim'), device: device() });
      state.coupons.set(reply.coupon.coupon_id, reply.coupon);
      toast(`Claimed ${reply.coupon.name}: it is in My coupons.`);
    } catch (error) {
      failed(error);
      if (template && error.code === 'NOT_ELIGIBLE') location.hash = '#member-section';
    }
    await Promise.all([renderWidget(), renderWallet(), renderList(), refreshProduct()]);
  }
  async function claimCode(event) {
    event.preventDefault();
    const input = $('#code-input');
    const code = input.value.trim();
    if (!code) return;
    if (!state.token) { toast('Please sign in first: press "New shopper".', 'error'); return; }
    try {
      const reply = await api('POST', shop('/coupons/claim-by-code'), { code, request_id: requestId('code') });
      state.coupons.set(reply.coupon.coupon_id, reply.coupon);
      toast(`Code accepted: ${reply.coupon.name} is in My coupons.`);
      input.value = '';
      await Promise.all([renderWallet(), refreshProduct()]);
    } catch (error) { failed(error, 'code'); }
  }

  // ---- my coupons ----------------------------------------------------------------------
  async function renderWallet() {
    const box = $('#wallet');
    if (!state.token) { box.replaceChildren(needSignIn('your coupons')); return; }
    try {
      const reply = await api('GET', shop(`/me/coupons?status=${state.walletStatus}&limit=50`));
      for (const coupon of reply.items) state.coupons.set(coupon.coupon_id, coupon);
      if (!reply.items.length) { box.replaceChildren(el('p', { class: 'muted' }, 'No coupons here yet: claim one above.')); return; }
      box.replaceChildren(el('ul', { class: 'coupons wallet' }, reply.items.map((c) => el('li', { class: 'coupon status-' + c.status, dataset: { coupon: c.coupon_id } },
        el('div', { class: 'badge' }, benefitBadge(c.benefit)),
        el('div', { class: 'body' },
          el('strong', { class: 'name' }, c.name),
          el('span', {}, benefitText(c.benefit)),
          el('span', { class: 'muted' }, `${SOURCES[c.source] || c.source} · valid until ${when(c.valid_to)}`),
          c.code ? el('span', { class: 'muted' }, `code ${c.code}`) : '',
          c.expiring_soon && c.status === 'unused' ? el('span', { class: 'tag hot' }, 'Expires soon') : ''),
        c.status === 'unused'
          ? el('a', { class: 'button primary use-now', href: `#use-${c.coupon_id}`, onclick: (e) => { e.preventDefault(); openRedeem(c); } }, 'Use now')
          : el('span', { class: 'tag' }, c.status)))));
    } catch (error) { box.replaceChildren(el('p', { class: 'error' }, humanError(error))); }
  }
  // "Use now" jumps to the template's redeem page (券核销跳转页) in the mini-program; here the
  // page shows that path and what the coupon does to an order of the open product.
  async function openRedeem(coupon) {
    const productId = state.productId || state.config.product_ids[0];
    const body = $('#redeem-body');
    const [page, query] = coupon.redeem_page.split('?');
    const params = new URLSearchParams(query || '');
    params.set('coupon_id', coupon.coupon_id);
    body.replaceChildren(
      el('p', {}, 'In the mini-program, "Use now" opens ', el('code', { id: 'redeem-page' }, `${page}?${params}`), '.'),
      el('p', {}, el('strong', {}, coupon.name), ' · ', benefitText(coupon.benefit)),
      el('p', { class: 'muted' }, 'Checking it on one ', productName(productId), ' (POST /checkout/preview)…'));
    show($('#redeem'), true);
    try {
      const preview = await api('POST', shop('/checkout/preview'), { items: [{ product_id: productId, quantity: 1 }], coupon_ids: [coupon.coupon_id] });
      body.lastChild.replaceWith(el('p', {}, `One ${productName(productId)}: ${yuan(preview.total)} − ${yuan(preview.discount)} = `, el('strong', {}, yuan(preview.payable)), ' 到手价'));
    } catch (error) {
      body.lastChild.replaceWith(el('p', { class: 'error' }, `${humanError(error)} Try it on another product.`));
    }
  }

  // ---- live room -----------------------------------------------------------------------
  const LIVE_LABELS = { live: 'Live now', upcoming: 'Upcoming', ended: 'Ended' };
  async function renderLive() {
    const box = $('#live');
    const room = state.config.live_room_id;
    try {
      const reply = await api('GET', shop(`/live-rooms/${encodeURIComponent(room)}/prices?product_ids=${state.config.product_ids.join(',')}`));
      if (!reply.items.length) { box.replaceChildren(el('p', { class: 'muted' }, 'No live prices in this room.')); return; }
      box.replaceChildren(el('p', { class: 'muted', id: 'live-zone' }, `Room ${reply.room_id} · times in the shop's time zone (${shopZone()})`), el('ul', { class: 'live' }, reply.items.map((item) => el('li', { class: 'live-card status-' + item.status },
        el('span', { class: 'tag ' + (item.status === 'live' ? 'hot' : '') }, LIVE_LABELS[item.status] || item.status),
        el('strong', {}, productName(item.product_id)),
        el('span', {}, el('s', { class: 'muted' }, yuan(item.list_price)), ' ', el('span', { class: 'final' }, yuan(item.exclusive_price)), ' 直播专享价'),
        el('span', { class: 'muted' }, `${when(item.starts_at)} – ${when(item.ends_at)}`),
        item.status === 'live' ? el('button', { type: 'button', class: 'small', onclick: () => { openProduct(item.product_id, true); location.hash = '#detail-section'; } }, 'Buy in the live room') : ''))));
    } catch (error) { box.replaceChildren(el('p', { class: 'error' }, humanError(error))); }
  }

  // ---- member center and the gift-pack popup ---------------------------------------------
  const PACK_LABELS = { claimable: 'Claim', claimed: 'Claimed', sold_out: 'Sold out', not_eligible: 'Not eligible', ended: 'Ended' };
  async function renderMember() {
    const box = $('#member');
    if (!state.token) { box.replaceChildren(needSignIn('the member center')); return; }
    let center;
    try { center = await api('GET', shop('/member-center')); } catch (error) {
      box.replaceChildren(el('p', { class: 'error' }, humanError(error)));
      return;
    }
    const member = center.member && center.member.active !== false ? center.member : null;
    box.replaceChildren(
      member
        ? el('p', { id: 'member-status' }, el('strong', {}, `Member, level ${member.level}`), center.new_member ? el('span', { class: 'tag hot' }, 'New member') : '',
          el('span', { class: 'muted' }, ` · joined ${when(member.joined_at)} · ${plural(center.points, 'point')}`))
        : el('p', { id: 'member-status' }, center.member ? 'You left the membership. Joining again is a rejoin: new-member gifts are for first joins only.' : 'Not a member yet: join to get the new-member gift pack.'),
      el('div', { class: 'actions' }, member
        ? el('button', { type: 'button', onclick: leave }, 'Leave membership')
        : el('button', { type: 'button', class: 'primary', id: 'join', onclick: join }, center.member ? 'Join again' : 'Join membership')),
      center.gift_packs.length ? el('h4', {}, 'Gift packs') : '',
      el('ul', { class: 'packs' }, center.gift_packs.map(({ pack, state: packState }) => el('li', { class: 'pack', dataset: { pack: pack.id, state: packState } },
        el('div', { class: 'body' },
          el('strong', {}, pack.name, ' ', el('span', { class: 'muted' }, pack.kind === 'new_member' ? 'New-member pack' : `Member pack · level ${pack.min_level}+`)),
          el('span', { class: 'muted' }, pack.benefits.map((b) => b.name).join(' + '))),
        el('button', { type: 'button', class: packState === 'claimable' ? 'primary' : '', disabled: packState !== 'claimable', onclick: () => showPopup(pack) }, PACK_LABELS[packState] || packState)))));
    if (center.popup) showPopup(center.popup);
  }
  async function join() {
    try {
      const reply = await api('POST', shop('/membership'), {});
      toast(reply.new_member ? 'Welcome! You are a member now.' : 'Welcome back!');
      if (reply.popup) showPopup(reply.popup);
    } catch (error) { failed(error); }
    await Promise.all([renderMember(), renderWidget(), renderPoints(), refreshProduct()]);
  }
  async function leave() {
    try {
      await api('DELETE', shop('/membership'));
      toast('You left the membership.');
    } catch (error) { failed(error); }
    await Promise.all([renderMember(), renderWidget(), renderPoints(), refreshProduct()]);
  }
  // One popup at a time: joining can bring one and the member center another.
  function showPopup(pack) {
    if (state.popupPack) {
      if (state.popupPack.id !== pack.id && !state.popups.some((p) => p.id === pack.id)) state.popups.push(pack);
      return;
    }
    state.popupPack = pack;
    const count = pack.benefits.length;
    const gifts = pack.benefits.filter((b) => b.type === 'gift').length;
    $('#popup-title').textContent = pack.name;
    $('#popup-text').textContent = `${packContents(count - gifts, gifts)} inside. Open the pack to reveal ${count === 1 ? 'it' : 'them'}: you get ${count === 1 ? 'it' : 'every one'}.`;
    $('#popup-prizes').replaceChildren(...pack.benefits.map(() => el('li', { class: 'prize hidden-prize' }, el('span', { class: 'back' }, '?'))));
    show($('#popup-error'), false);
    const claimButton = $('#popup-claim');
    claimButton.disabled = false;
    show(claimButton, true);
    $('#popup-close').textContent = 'Later';
    show($('#popup'), true);
  }
  function closePopup() {
    show($('#popup'), false);
    state.popupPack = null;
    const next = state.popups.shift();
    if (next) showPopup(next);
  }
  async function claimPack() {
    const pack = state.popupPack;
    const button = $('#popup-claim');
    button.disabled = true;
    try {
      const reply = await api('POST', shop(`/gift-packs/${pack.id}/claim`), { request_id: requestId('pack') });
      // presentation "lottery": reveal the prizes one by one, yet every benefit is granted.
      const prizes = [...reply.coupons, ...(reply.gift ? [reply.gift] : [])];
      $('#popup-prizes').replaceChildren(...prizes.map((coupon, i) => el('li', { class: 'prize revealed' },
        el('span', { class: 'badge' }, benefitBadge(coupon.benefit)),
        el('strong', {}, coupon.name),
        el('span', { class: 'muted' }, benefitText(coupon.benefit)))));
      document.querySelectorAll('#popup-prizes .prize').forEach((node, i) => { node.style.animationDelay = `${i * 0.35}s`; });
      const contents = packContents(reply.coupons.length, reply.gift ? 1 : 0);
      $('#popup-text').textContent = prizes.length === 1
        ? `You got it: ${contents}. It is in My coupons.`
        : `You got them all: ${contents}. They are in My coupons.`;
      show(button, false);
      $('#popup-close').textContent = 'Done';
      toast(`${pack.name} claimed: ${contents} added to My coupons.`);
    } catch (error) {
      const node = $('#popup-error');
      node.textContent = humanError(error, 'pack');
      show(node, true);
      button.disabled = false;
    }
    await Promise.all([renderMember(), renderWallet(), refreshProduct(), renderList()]);
  }

  // ---- points exchange (积分兑换) -------------------------------------------------------
  const OFFER_LABELS = {
    insufficient_points: 'Not enough points', sold_out: 'Sold out', limit_reached: 'Exchanged',
    not_started: 'Not started', ended: 'Ended',
  };
  async function renderPoints() {
    const box = $('#points');
    if (!state.token) { box.replaceChildren(needSignIn('your points')); return; }
    let page;
    try { page = await api('GET', shop('/points-exchange')); } catch (error) {
      box.replaceChildren(error.status === 404
        ? el('p', { class: 'muted', id: 'points-off' }, 'Points exchange is not available in this shop yet.')
        : el('p', { class: 'error' }, humanError(error)));
      return;
    }
    box.replaceChildren(
      el('p', {}, 'Balance: ', el('strong', { id: 'points-balance' }, plural(page.balance, 'point'))),
      page.member === false ? el('p', { class: 'muted' }, 'Join the membership to exchange points.') : '',
      page.offers.length ? '' : el('p', { class: 'muted' }, 'No offers right now.'),
      el('ul', { class: 'coupons' }, page.offers.map((offer) => {
        const available = offer.state === 'available';
        return el('li', { class: 'coupon', dataset: { offer: offer.offer_id, state: offer.state } },
          el('div', { class: 'badge' }, benefitBadge(offer.template.benefit)),
          el('div', { class: 'body' },
            el('strong', { class: 'name' }, offer.template.name),
            el('span', {}, benefitText(offer.template.benefit)),
            el('span', { class: 'muted' }, plural(offer.points_cost, 'point'))),
          el('button', { type: 'button', class: available ? 'primary' : '', disabled: !available, onclick: () => redeem(offer) },
            available ? `Exchange for ${plural(offer.points_cost, 'point')}` : (OFFER_LABELS[offer.state] || offer.state)));
      })));
  }
  async function redeem(offer) {
    try {
      const reply = await api('POST', shop(`/points-exchange/${offer.offer_id}/redeem`), { request_id: requestId('points'), device: device() });
      state.coupons.set(reply.coupon.coupon_id, reply.coupon);
      toast(`Exchanged ${plural(offer.points_cost, 'point')} for ${reply.coupon.name}. ${plural(reply.balance, 'point')} left.`);
    } catch (error) { failed(error, 'points'); }
    await Promise.all([renderPoints(), renderWallet(), renderMember(), refreshProduct()]);
  }

  // ---- wiring --------------------------------------------------------------------------
  async function refreshAll() {
    await loadProducts();
    // The widget and the wallet name the templates and coupons that prices refer to.
    await renderWidget();
    await renderWallet();
    await Promise.all([renderList(), openProduct(state.productId || state.config.auto_claim_product, state.liveRoom),
      renderLive(), renderMember(), renderPoints()]);
    document.body.dataset.ready = 'true';
  }
  async function start() {
    try {
      const response = await fetch('/demo/config.json', { headers: { Accept: 'application/json' } });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      state.config = await response.json();
    } catch (err) {
      banner(`The demo page could not load its settings (${err.message}). Is the server running?`);
      return;
    }
    setToken(tokenFromLocation() || sessionStorage.getItem('bff-demo-token'));
    show($('#new-shopper'), true);
    $('#new-shopper').addEventListener('click', newShopper);
    $('#sign-out').addEventListener('click', () => { setToken(null); toast('Signed out.'); refreshAll(); });
    $('#code-form').addEventListener('submit', claimCode);
    $('#code-input').placeholder = state.config.code_hint || '';
    $('#popup-claim').addEventListener('click', claimPack);
    $('#popup-close').addEventListener('click', closePopup);
    $('#redeem-close').addEventListener('click', () => show($('#redeem'), false));
    document.addEventListener('keydown', (e) => {
      if (e.key !== 'Escape') return;
      if (!$('#redeem').classList.contains('hidden')) show($('#redeem'), false);
      else if (!$('#popup').classList.contains('hidden')) closePopup();
    });
    $('#wallet-tabs').addEventListener('click', (e) => {
      const tab = e.target.closest('[data-status]');
      if (!tab) return;
      state.walletStatus = tab.dataset.status;
      document.querySelectorAll('#wallet-tabs [data-status]').forEach((b) => b.setAttribute('aria-selected', String(b === tab)));
      renderWallet();
    });
    if (!state.token && !state.config.dev_sign_in) {
      banner('Open the link that python run.py --demo printed to sign in as the demo shopper.');
    }
    await refreshAll();
  }
  document.addEventListener('DOMContentLoaded', start);
})();

/* llmchat.core: the Lua binding of the engine and of requests.
 *
 * One engine per Lua state (a userdata, the upvalue of every function here):
 * no C globals, so two Lua states in one process never share hidden state.
 * Lua callbacks (on_delta, on_event, on_complete) run from core.drive, after libcurl
 * has returned, under lua_pcall: an error raised by one callback cancels only its own
 * request and is handed to the caller of drive once the dispatch is over.
 *
 * The binding changes no engine or request state itself: it calls engine functions
 * (engine.h) for every start, cancel, resume and completion. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "compat.h"
#include "engine.h"
#include "lconsumer.h"
#include "jencode.h"
#include "jdecode.h"
#include "lsse.h"
#include "lstream.h"
#include "b64.h"

#define ENGINE_MT "llmchat.engine"
#define ENGINE_KEY "llmchat.engine.instance" /* the instance; ENGINE_MT names its metatable */
#define REQUEST_MT "llmchat.request"
#define LLMCHAT_VERSION "0.2.0"

typedef struct lrequest {
  request r;        /* first: a request * is its lrequest * */
  int initialized;
  int closed;
  int callbacks;    /* r:handlers gave on_delta or on_event: records are delivered */
} lrequest;

static engine *get_engine(lua_State *L) {
  engine *e = (engine *)lua_touserdata(L, lua_upvalueindex(1));
  if (!e || e->closed) luaL_error(L, "llmchat: the engine is closed");
  return e;
}

static lrequest *check_req(lua_State *L, int idx) {
  lrequest *lr = (lrequest *)luaL_checkudata(L, idx, REQUEST_MT);
  if (lr->closed) luaL_error(L, "llmchat: request is closed");
  return lr;
}

/* the engine's uservalue: { [lightuserdata request] = request userdata } for
 * every request in flight, so none is collected under libcurl */
static void inflight_add(lua_State *L, request *r, int ud_idx) {
  ud_idx = lua_absindex(L, ud_idx);
  lua_getuservalue(L, lua_upvalueindex(1));
  lua_pushlightuserdata(L, (void *)r);
  lua_pushvalue(L, ud_idx);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

static void inflight_remove(lua_State *L, request *r) {
  lua_getuservalue(L, lua_upvalueindex(1));
  lua_pushlightuserdata(L, (void *)r);
  lua_pushnil(L);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}


/* ---- request options ---------------------------------------------------- */

static double opt_number(lua_State *L, int t, const char *k, double def) {
  double v;
  lua_getfield(L, t, k);
  if (lua_isnil(L, -1)) v = def;
  else if (lua_type(L, -1) == LUA_TNUMBER) v = (double)lua_tonumber(L, -1);
  else return luaL_error(L, "llmchat.request: option '%s' must be a number", k);
  lua_pop(L, 1);
  return v;
}

static const char *opt_string(lua_State *L, int t, const char *k, size_t *len) {
  const char *s = NULL;
  lua_getfield(L, t, k);
  if (lua_type(L, -1) == LUA_TSTRING) s = lua_tolstring(L, -1, len);
  else if (!lua_isnil(L, -1))
    luaL_error(L, "llmchat.request: option '%s' must be a string", k);
  lua_pop(L, 1);  /* the string stays alive: it is a field of the table */
  return s;
}

static int has_crlf(const char *s, size_t n) {
  return memchr(s, '\r', n) != NULL || memchr(s, '\n', n) != NULL || memchr(s, '\0', n) != NULL;
}

/* seconds as milliseconds for libcurl, clamped: a huge value means "no limit
 * worth the name", never an overflowing conversion */
static long to_ms(double seconds) {
  if (!(seconds > 0)) return 0;
  if (seconds > 1e6) return 1000000000L;  /* ~11.5 days */
  return (long)ceil(seconds * 1000.0);
}

static void set_timeout(CURL *easy, CURLoption opt, double seconds) {
  long ms = to_ms(seconds);
  if (ms > 0) curl_easy_setopt(easy, opt, ms);
}

/* multipart = { { name = "purpose", data = "batch" },
 *               { name = "file", file = "/path", filename = "in.jsonl", type = "application/jsonl" } }
 * A file part is streamed from disk by libcurl as the upload goes (never read whole). */
static void set_multipart(lua_State *L, request *r, int t) {
  int i, n = (int)lua_rawlen(L, t);
  r->mime = curl_mime_init(r->easy);
  if (!r->mime) luaL_error(L, "llmchat: out of memory");
  for (i = 1; i <= n; i++) {
    curl_mimepart *part;
    const char *name, *data, *file, *fname, *type;
    size_t len = 0, dlen = 0;
    lua_rawgeti(L, t, i);
    if (!lua_istable(L, -1)) luaL_error(L, "llmchat.request: multipart[%d] must be a table", i);
    name = opt_string(L, -1, "name", &len);
    data = opt_string(L, -1, "data", &dlen);
    file = opt_string(L, -1, "file", &len);
    fname = opt_string(L, -1, "filename", &len);
    type = opt_string(L, -1, "type", &len);
    if (!name || (!data && !file))
      luaL_error(L, "llmchat.request: multipart[%d] needs a name and data or file", i);
    part = curl_mime_addpart(r->mime);
    if (!part) luaL_error(L, "llmchat: out of memory");
    curl_mime_name(part, name);
    if (file) {
      if (curl_mime_filedata(part, file) != CURLE_OK)
        luaL_error(L, "llmchat.request: multipart[%d]: cannot read file", i);
    } else {
      curl_mime_data(part, data, dlen);
    }
    if (fname) curl_mime_filename(part, fname);
    if (type) curl_mime_type(part, type);
    lua_pop(L, 1);
  }
  curl_easy_setopt(r->easy, CURLOPT_MIMEPOST, r->mime);
}

/* core.request{ url=, method=, headers={"Name: value"}, body=, multipart=, stream=,
 *   consumer="chat"|"events", timeout=, connect_timeout=, idle_timeout=, proxy=, ca_file=,
 *   verify=, max_response_size=, max_line=, accept_encoding=, download=path }
 *   -> request (not started). download: a 2xx body is written to that file as it arrives
 *   (r:body() is "" then); another status's body is kept as usual. */
static int l_request(lua_State *L) {
  lrequest *lr;
  request *r;
  const char *url, *method, *body, *s;
  size_t url_len, body_len = 0, len;
  double v;
  CURL *easy;
  engine *e = get_engine(L);
  consumer_kind kind = CONSUMER_CHAT;

  luaL_checktype(L, 1, LUA_TTABLE);
  url = opt_string(L, 1, "url", &url_len);
  if (!url) return luaL_argerror(L, 1, "'url' is required");
  if (has_crlf(url, url_len)) return luaL_argerror(L, 1, "'url' contains CR, LF or NUL");
  if (!(url_len > 7 && strncmp(url, "http://", 7) == 0) &&
      !(url_len > 8 && strncmp(url, "https://", 8) == 0))
    return luaL_error(L, "llmchat: only http:// and https:// URLs are allowed (got '%s')", url);
  s = opt_string(L, 1, "consumer", &len);
  if (s && strcmp(s, "events") == 0) kind = CONSUMER_EVENTS;
  else if (s && strcmp(s, "chat") != 0)
    return luaL_argerror(L, 1, "'consumer' must be \"chat\" or \"events\"");

  lr = (lrequest *)lua_newuserdata(L, sizeof *lr);
  memset(lr, 0, sizeof *lr);
  lr->closed = 1;  /* consistent before any resource is acquired */
  luaL_setmetatable(L, REQUEST_MT);
  lua_createtable(L, 0, 5);  /* r:handlers' fields go in without a rehash */
  lua_setuservalue(L, -2);
  r = &lr->r;
  if (request_init(r, engine_easy(e), kind) != 0) {
    engine_release(e, r);
    return luaL_error(L, "llmchat: libcurl could not create a handle");
  }
  lr->initialized = 1;
  lr->closed = 0;
  easy = r->easy;

  curl_easy_setopt(easy, CURLOPT_URL, url);  /* libcurl copies option strings */
  method = opt_string(L, 1, "method", &len);
  body = opt_string(L, 1, "body", &body_len);
  if (body) {
    r->body = (char *)malloc(body_len ? body_len : 1);
    if (!r->body) return luaL_error(L, "llmchat: out of memory");
    memcpy(r->body, body, body_len);
    r->body_len = body_len;
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
  }
  if (method) {
    if (strcmp(method, "GET") == 0 && !body) curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
    else if (strcmp(method, "POST") != 0) {
      if (has_crlf(method, len)) return luaL_argerror(L, 1, "'method' contains CR or LF");
      curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, method);
    }
  }

  lua_getfield(L, 1, "multipart");
  if (lua_istable(L, -1)) set_multipart(L, r, lua_gettop(L));
  else if (!lua_isnil(L, -1)) return luaL_error(L, "llmchat.request: 'multipart' must be a table");
  lua_pop(L, 1);

  lua_getfield(L, 1, "headers");
  if (lua_istable(L, -1)) {
    int i, n = (int)lua_rawlen(L, -1);
    for (i = 1; i <= n; i++) {
      struct curl_slist *nl;
      lua_rawgeti(L, -1, i);
      s = lua_tolstring(L, -1, &len);
      if (!s) return luaL_error(L, "llmchat.request: headers[%d] must be a string", i);
      if (has_crlf(s, len))
        return luaL_error(L, "llmchat: header %d contains CR, LF or NUL (header injection refused)", i);
      nl = curl_slist_append(r->hdrs, s);
      if (!nl) return luaL_error(L, "llmchat: out of memory");
      r->hdrs = nl;
      lua_pop(L, 1);
    }
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, r->hdrs);
  } else if (!lua_isnil(L, -1)) {
    return luaL_error(L, "llmchat.request: 'headers' must be an array of strings");
  }
  lua_pop(L, 1);

  lua_getfield(L, 1, "stream");
  r->want_stream = lua_toboolean(L, -1);
  lua_pop(L, 1);

  set_timeout(easy, CURLOPT_TIMEOUT_MS, opt_number(L, 1, "timeout", 0));
  set_timeout(easy, CURLOPT_CONNECTTIMEOUT_MS, opt_number(L, 1, "connect_timeout", 0));
  v = opt_number(L, 1, "idle_timeout", 0);
  r->idle_ms = to_ms(v);
  s = opt_string(L, 1, "proxy", &len);
  if (s) {
    if (has_crlf(s, len)) return luaL_argerror(L, 1, "'proxy' contains CR or LF");
    curl_easy_setopt(easy, CURLOPT_PROXY, s);
  }
  s = opt_string(L, 1, "ca_file", &len);
  if (s) curl_easy_setopt(easy, CURLOPT_CAINFO, s);
  lua_getfield(L, 1, "verify");
  if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  lua_pop(L, 1);
  v = opt_number(L, 1, "max_response_size", 0);
  if (v >= 1) r->max_body = v >= 1e15 ? (size_t)1e15 : (size_t)v;
  v = opt_number(L, 1, "max_line", 0);
  if (v >= 1) r->max_line = v >= 1e15 ? (size_t)1e15 : (size_t)v;
  s = opt_string(L, 1, "download", &len);
  if (s) {
    r->download = (char *)malloc(len + 1);
    if (!r->download) return luaL_error(L, "llmchat: out of memory");
    memcpy(r->download, s, len + 1);
  }
  lua_getfield(L, 1, "accept_encoding");
  if (lua_toboolean(L, -1)) curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, "");
  lua_pop(L, 1);
  return 1;
}

static int r_start(lua_State *L) {
  engine *e = get_engine(L);
  lrequest *lr = check_req(L, 1);
  if (lr->r.state == REQ_RUNNING) return luaL_error(L, "llmchat: request already running");
  if (engine_add(e, &lr->r) != 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "libcurl refused to start the transfer");
    return 2;
  }
  inflight_add(L, &lr->r, 1);
  lua_pushboolean(L, 1);
  return 1;
}

static int r_cancel(lua_State *L) {
  engine *e = get_engine(L);
  lrequest *lr = check_req(L, 1);
  engine_cancel(e, &lr->r);
  return 0;
}

/* r:hold(true|false): while held, the request's records are not dispatched (an
 * iterator whose queue is full); flow control pauses the transfer meanwhile */
static int r_hold(lua_State *L) {
  engine *e = get_engine(L);
  lrequest *lr = check_req(L, 1);
  engine_hold(e, &lr->r, lua_toboolean(L, 2));
  return 0;
}

static int r_close(lua_State *L) {
  lrequest *lr = (lrequest *)luaL_checkudata(L, 1, REQUEST_MT);
  engine *e = (engine *)lua_touserdata(L, lua_upvalueindex(1));
  if (lr->closed && !lr->initialized) return 0;
  if (lr->initialized) {
    if (engine_is_added(&lr->r) && e && !e->closed) inflight_remove(L, &lr->r);
    engine_release(e, &lr->r);
  }
  lr->initialized = 0;
  lr->closed = 1;
  return 0;
}

static int r_state(lua_State *L) {
  lrequest *lr = (lrequest *)luaL_checkudata(L, 1, REQUEST_MT);
  static const char *const names[] = {"idle", "running", "done"};
  lua_pushstring(L, lr->closed ? "closed" : names[lr->r.state]);
  return 1;
}

static int r_status(lua_State *L) {
  lrequest *lr = check_req(L, 1);
  long status = 0;
  curl_easy_getinfo(lr->r.easy, CURLINFO_RESPONSE_CODE, &status);
  lua_pushinteger(L, (lua_Integer)status);
  return 1;
}

/* headers as a table with lower-case names; repeated headers joined by ", ". Linear in
 * the headers: a name seen again collects its values in an array, joined once at the end
 * (joining as they come copied the growing string for every repeat). */
static int r_headers(lua_State *L) {
  lrequest *lr = check_req(L, 1);
  const bytebuf *h = &lr->r.resp_headers;
  size_t i = 0, n = lr->r.nheaders;
  int t, dups = 0;
  lua_createtable(L, 0, (int)(n < 1024 ? n : 1024));
  t = lua_gettop(L);
  while (i < h->len) {
    const char *k = h->p + i;
    size_t kl = strlen(k);
    const char *v = k + kl + 1;
    size_t vl = strlen(v);
    lua_pushlstring(L, k, kl);
    lua_pushvalue(L, -1);
    lua_rawget(L, t);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_pushlstring(L, v, vl);
      lua_rawset(L, t);
    } else {
      /* stack: name, first value */
      if (!dups) {
        lua_newtable(L);
        lua_insert(L, -3);  /* dups below name, first value */
        dups = lua_gettop(L) - 2;
      }
      lua_pushvalue(L, -2);
      lua_rawget(L, dups);
      if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_createtable(L, 4, 0);
        lua_pushvalue(L, -2);  /* first value */
        lua_rawseti(L, -2, 1);
        lua_pushvalue(L, -3);  /* name */
        lua_pushvalue(L, -2);
        lua_rawset(L, dups);
      }
      lua_pushlstring(L, v, vl);
      lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
      lua_pop(L, 3);  /* list, first value, name */
    }
    i = (size_t)(v - h->p) + vl + 1;
  }
  if (dups) {
    lua_pushnil(L);
    while (lua_next(L, dups)) {
      luaL_Buffer b;
      size_t j, m = lua_rawlen(L, -1);
      int list = lua_gettop(L);
      lua_pushvalue(L, -2);  /* name */
      luaL_buffinit(L, &b);
      for (j = 1; j <= m; j++) {
        if (j > 1) luaL_addlstring(&b, ", ", 2);
        lua_rawgeti(L, list, (lua_Integer)j);
        luaL_addvalue(&b);
      }
      luaL_pushresult(&b);
      lua_rawset(L, t);
      lua_pop(L, 1);  /* list */
    }
    lua_settop(L, t);
  }
  return 1;
}

static int r_body(lua_State *L) {
  lrequest *lr = check_req(L, 1);
  lua_pushlstring(L, lr->r.resp_body.p ? lr->r.resp_body.p : "", lr->r.resp_body.len);
  return 1;
}

/* the chat assembler's result table; nil for an events consumer */
static int r_result(lua_State *L) {
  lrequest *lr = check_req(L, 1);
  if (lr->r.cons.kind != CONSUMER_CHAT) {
    lua_pushnil(L);
    return 1;
  }
  return lstream_push_result(L, &lr->r.cons.as);
}

/* reason, curl code, message */
static int r_outcome(lua_State *L) {
  lrequest *lr = check_req(L, 1);
  request *r = &lr->r;
  static const char *const reasons[] = {"ok", "too_large", "sse", "json", "cancelled",
                                        "nomem", "headers", "idle", "file"};
  const char *msg = r->msg[0] ? r->msg : r->errbuf[0] ? r->errbuf : curl_easy_strerror(r->code);
  lua_pushstring(L, reasons[r->reason]);
  lua_pushinteger(L, (lua_Integer)r->code);
  lua_pushstring(L, r->code == CURLE_OK && !r->msg[0] ? "" : msg);
  return 3;
}

static int r_info(lua_State *L) {
  lrequest *lr = check_req(L, 1);
  CURL *easy = lr->r.easy;
  double d;
  long l;
  char *s = NULL;
  lua_createtable(L, 0, 14);
#define NUMINFO(name, info) \
  d = 0; curl_easy_getinfo(easy, info, &d); lua_pushnumber(L, d); lua_setfield(L, -2, name)
#define INTINFO(name, info) \
  l = 0; curl_easy_getinfo(easy, info, &l); lua_pushinteger(L, l); lua_setfield(L, -2, name)
  NUMINFO("total_time", CURLINFO_TOTAL_TIME);
  NUMINFO("namelookup_time", CURLINFO_NAMELOOKUP_TIME);
  NUMINFO("connect_time", CURLINFO_CONNECT_TIME);
  NUMINFO("appconnect_time", CURLINFO_APPCONNECT_TIME);
  NUMINFO("starttransfer_time", CURLINFO_STARTTRANSFER_TIME);
  INTINFO("num_connects", CURLINFO_NUM_CONNECTS);
  INTINFO("local_port", CURLINFO_LOCAL_PORT);
  INTINFO("primary_port", CURLINFO_PRIMARY_PORT);
#undef NUMINFO
#undef INTINFO
  if (curl_easy_getinfo(easy, CURLINFO_PRIMARY_IP, &s) == CURLE_OK && s) {
    lua_pushstring(L, s);
    lua_setfield(L, -2, "primary_ip");
  }
  lua_pushboolean(L, lr->r.sse_mode);
  lua_setfield(L, -2, "sse");
  lua_pushboolean(L, lr->r.cons.done_marker);
  lua_setfield(L, -2, "done_marker");
  lua_pushboolean(L, consumer_finished(&lr->r.cons));
  lua_setfield(L, -2, "finished");
  lua_pushinteger(L, (lua_Integer)lr->r.cons.events);
  lua_setfield(L, -2, "events");
  lua_pushinteger(L, (lua_Integer)lr->r.stream_bytes);
  lua_setfield(L, -2, "stream_bytes");
  lua_pushinteger(L, (lua_Integer)lr->r.cons.assembled);
  lua_setfield(L, -2, "assembled");
  return 1;
}

/* sse_mode, done_marker, finished, events: what completion needs, no table */
static int r_stream_state(lua_State *L) {
  lrequest *lr = check_req(L, 1);
  lua_pushboolean(L, lr->r.sse_mode);
  lua_pushboolean(L, lr->r.cons.done_marker);
  lua_pushboolean(L, consumer_finished(&lr->r.cons));
  lua_pushinteger(L, (lua_Integer)lr->r.cons.events);
  return 4;
}

static int r_error_json(lua_State *L) {
  lrequest *lr = check_req(L, 1);
  size_t len = 0;
  const char *s = consumer_error(&lr->r.cons, &len);
  if (s) lua_pushlstring(L, s, len);
  else lua_pushnil(L);
  return 1;
}

/* r:handlers(on_delta, on_complete, event_metatable [, batch [, on_event]])
 *   on_delta(text, ev)   the answer's text only (content of the first choice): joining every
 *                        text gives res.content
 *   on_event(ev)         every record (ev.delta = its text), raw events included
 *   batch true: on_delta is called once per dispatch as on_delta(events, n), events an array
 *   of the n event tables of every kind, each with its text in ev.delta (what an iterator
 *   wants: one call instead of n); on_event is not used then. */
static int r_handlers(lua_State *L) {
  lrequest *lr = check_req(L, 1);
  lua_settop(L, 6);
  lr->r.max_pending = lua_toboolean(L, 5) ? MAX_PENDING_BATCH : MAX_PENDING_DELTAS;
  lr->callbacks = lua_isfunction(L, 2) || lua_isfunction(L, 6);
  lua_getuservalue(L, 1);
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, "on_delta");
  lua_pushvalue(L, 3);
  lua_setfield(L, -2, "on_complete");
  lua_pushvalue(L, 4);
  lua_setfield(L, -2, "ev_mt");
  lua_pushboolean(L, lua_toboolean(L, 5));
  lua_setfield(L, -2, "batch");
  lua_pushvalue(L, 6);
  lua_setfield(L, -2, "on_event");
  return 0;
}

static int r_tostring(lua_State *L) {
  lrequest *lr = (lrequest *)luaL_checkudata(L, 1, REQUEST_MT);
  lua_pushfstring(L, "llmchat.request (%s)", lr->closed ? "closed" : lr->r.state == REQ_RUNNING ? "running" : lr->r.state == REQ_DONE ? "done" : "idle");
  return 1;
}

/* ---- dispatch ------------------------------------------------------------ */

/* The callback loop of one request's records, run under the dispatch's protected call:
 * deliver(L, r, on_delta, on_event, mt) -> 1 when a callback returned false (stop). The
 * pending count is read again after every call: a callback may cancel or close its own
 * request, and closing frees the records. */
static int deliver(lua_State *L, request *r, int fd, int fe, int mt) {
  int keys = consumer_pending(&r->cons) > 2 && r->cons.kind == CONSUMER_CHAT
                 ? lstream_push_keys(L) : 0;
  size_t next = 0;
  while (next < consumer_pending(&r->cons)) {
    int answer = fd && lconsumer_is_answer(&r->cons, next);
    int stop = 0;
    lconsumer_push_event(L, &r->cons, next++, mt, keys); /* text, ev */
    if (fe) {
      if (keys) lua_pushvalue(L, keys + LSTREAM_KEY_DELTA);
      else lua_pushliteral(L, "delta");
      lua_pushvalue(L, -3);
      lua_rawset(L, -3);  /* ev.delta = text */
    }
    if (answer) {
      lua_pushvalue(L, fd);
      lua_pushvalue(L, -3);
      lua_pushvalue(L, -3);
      lua_call(L, 2, 1);
      stop = lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1);
      lua_pop(L, 1);
    }
    if (fe && !stop) {
      lua_pushvalue(L, fe);
      lua_pushvalue(L, -2);
      lua_call(L, 1, 1);
      stop = lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1);
      lua_pop(L, 1);
    }
    lua_pop(L, 2);
    if (stop) return 1;
    if (r->state != REQ_RUNNING && r->reason == REASON_CANCELLED) return 0; /* cancelled inside */
  }
  return 0;
}

static int deliver_batch(lua_State *L, request *r, int fn, int mt) {
  size_t i, n = consumer_pending(&r->cons);
  int keys = r->cons.kind == CONSUMER_CHAT ? lstream_push_keys(L) : 0;
  int stop;
  lua_pushvalue(L, fn);
  lua_createtable(L, (int)(n < 0x7fffffff ? n : 0x7fffffff), 0);
  for (i = 0; i < n; i++) {
    lconsumer_push_event(L, &r->cons, i, mt, keys); /* text, ev */
    if (keys) lua_pushvalue(L, keys + LSTREAM_KEY_DELTA);
    else lua_pushliteral(L, "delta");
    lua_pushvalue(L, -3);
    lua_rawset(L, -3);                                /* ev.delta = text */
    lua_rawseti(L, -3, (lua_Integer)i + 1);
    lua_pop(L, 1);
  }
  lua_pushinteger(L, (lua_Integer)n);
  lua_call(L, 2, 1);
  stop = lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1);
  lua_pop(L, 1);
  return stop;
}

/* The request's handlers table is at hv. Delivers its records, then its completion when
 * due. Runs inside the dispatch's protected call; an error raised by a callback unwinds to
 * dispatch_one's lua_pcall. */
static int dispatch_records(lua_State *L) {
  request *r = (request *)lua_touserdata(L, 1);
  int hv = 2, fd, fe, mt, stop = 0;
  lua_getfield(L, hv, "on_delta");
  fd = lua_isfunction(L, -1) ? lua_gettop(L) : 0;
  lua_getfield(L, hv, "on_event");
  fe = lua_isfunction(L, -1) ? lua_gettop(L) : 0;
  lua_getfield(L, hv, "ev_mt");
  mt = lua_isnil(L, -1) ? 0 : lua_gettop(L);
  lua_getfield(L, hv, "batch");
  if (consumer_pending(&r->cons) && (fd || fe)) {
    if (lua_toboolean(L, -1) && fd) stop = deliver_batch(L, r, fd, mt);
    else stop = deliver(L, r, fd, fe, mt);
  }
  lua_pushboolean(L, stop);
  return 1;
}

static int call_completion(lua_State *L) {
  /* 1: on_complete, 2: request userdata */
  lua_call(L, 1, 0);
  return 0;
}

/* The error a pcall left on top goes to err_slot when that is still empty (the first
 * error wins); otherwise it is dropped. */
static void keep_first_error(lua_State *L, int err_slot) {
  if (lua_isnil(L, err_slot)) lua_replace(L, err_slot);
  else lua_pop(L, 1);
}

/* Delivers r's pending records and, when due, its completion. The first error raised by
 * a callback is left at err_slot (an absolute index, nil before). Every state change goes
 * through the engine: cancel on an error or the caller's false, consumed (resume),
 * completed. */
static void dispatch_one(lua_State *L, engine *e, request *r, int err_slot) {
  int top = lua_gettop(L), ud, hv, stop = 0;
  lua_getuservalue(L, lua_upvalueindex(1));
  lua_pushlightuserdata(L, (void *)r);
  lua_rawget(L, -2);
  if (lua_isnil(L, -1)) {
    /* not ours any more (closed): drop what it had */
    lua_settop(L, top);
    consumer_clear(&r->cons);
    if (r->link.completion_due) engine_completed(e, r);
    return;
  }
  if (r->link.held) {
    /* released later (engine_hold queues it again); its records wait */
    lua_settop(L, top);
    return;
  }
  ud = lua_gettop(L);
  lua_getuservalue(L, ud);
  hv = lua_gettop(L);
  /* records with nobody to take them (a stream read only for its result) are just dropped
   * below: no protected call */
  if (consumer_pending(&r->cons) && ((lrequest *)r)->callbacks) {
    lua_pushcfunction(L, dispatch_records);
    lua_pushlightuserdata(L, (void *)r);
    lua_pushvalue(L, hv);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
      keep_first_error(L, err_slot);
      stop = 1;
    } else {
      stop = lua_toboolean(L, -1);
      lua_pop(L, 1);
    }
  }
  /* an error, or the caller's no: cancel (the no wins even when the last bytes already
   * arrived) */
  if (stop) engine_cancel(e, r);
  engine_consumed(e, r);
  if (r->link.completion_due) {
    engine_completed(e, r);
    inflight_remove(L, r);
    lua_pushcfunction(L, call_completion);
    lua_getfield(L, hv, "on_complete");
    if (lua_isfunction(L, -1)) {
      lua_pushvalue(L, ud);
      if (lua_pcall(L, 2, 0, 0) != LUA_OK) keep_first_error(L, err_slot);
    }
  }
  lua_settop(L, top);
}

/* The dispatch loop, itself under lua_pcall (so an allocation error while an event is
 * built cannot leave the engine marked as dispatching):
 * 1: only request or nil, 2: err_slot, 3: budget in microseconds (0: none), 4: start time */
static int dispatch_loop(lua_State *L) {
  engine *e = (engine *)lua_touserdata(L, lua_upvalueindex(1));
  request *only = (request *)lua_touserdata(L, 1);
  long long budget = (long long)lua_tonumber(L, 3), t0 = (long long)lua_tonumber(L, 4);
  request *r;
  luaL_checkstack(L, 32, "llmchat dispatch");
  if (e->inject == 1 && engine_has_ready(e)) {
    e->inject = 0;  /* as if building an event ran out of memory */
    lua_pushliteral(L, "not enough memory");
    return lua_error(L);
  }
  while ((r = engine_pop_ready(e, only)) != NULL) {
    dispatch_one(L, e, r, 2);
    if (only) break;
    /* what the budget leaves stays queued, in order, for the next poll */
    if (budget > 0 && clock_now_us() - t0 >= budget) break;
  }
  lua_pushvalue(L, 2);
  return 1;
}

/* core.drive(wait_seconds [, only_request | false [, budget_seconds]])
 *   -> requests in flight, first callback error
 * Waits up to wait_seconds for network activity (0: not at all), lets libcurl move every
 * transfer, then fires the Lua callbacks of the ready requests (with only_request: that one
 * alone; with false: none; the others keep theirs for later). With a budget, stops handing
 * sockets to libcurl and stops dispatching once that much time has passed. */
static int l_drive(lua_State *L) {
  engine *e = get_engine(L);
  double wait = luaL_optnumber(L, 1, 0), budget = luaL_optnumber(L, 3, 0);
  request *only = NULL;
  int wait_ms, none = 0, status;
  long long budget_us, t0;
  if (lua_type(L, 2) == LUA_TBOOLEAN && !lua_toboolean(L, 2)) none = 1;  /* dispatch nothing */
  else if (!lua_isnoneornil(L, 2)) only = &check_req(L, 2)->r;
  if (!only && !none && e->dispatching)
    return luaL_error(L, "llmchat.poll: cannot poll from inside a callback that poll fired");
  if (!(wait >= 0)) wait = 0;  /* negative or NaN: do not wait (NaN would wait forever) */
  if (!only && !none && engine_has_ready(e)) wait = 0;  /* events are waiting for a poll */
  wait_ms = wait > 86400 ? 86400000 : (int)ceil(wait * 1000.0);
  budget_us = budget > 0 ? (budget > 86400 ? 86400000000LL : (long long)(budget * 1e6)) : 0;
  t0 = clock_now_us();
  engine_drive(e, wait_ms, budget_us);
  if (none) {
    lua_pushinteger(L, e->nreq);
    lua_pushnil(L);
    return 2;
  }
  lua_settop(L, 0);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushcclosure(L, dispatch_loop, 1);
  lua_pushlightuserdata(L, (void *)only);
  lua_pushnil(L);
  lua_pushnumber(L, (lua_Number)budget_us);
  lua_pushnumber(L, (lua_Number)t0);
  engine_begin_dispatch(e);  /* what the dispatch below makes ready waits for the next poll */
  status = lua_pcall(L, 4, 1, 0);
  engine_end_dispatch(e);
  if (status != LUA_OK) return lua_error(L);  /* out of memory building an event */
  lua_pushinteger(L, e->nreq);
  lua_insert(L, -2);
  return 2;
}

static int l_inflight(lua_State *L) {
  lua_pushinteger(L, get_engine(L)->nreq);
  return 1;
}

/* seconds until libcurl wants to be driven again, nil when it has no timer */
static int l_timeout(lua_State *L) {
  engine *e = get_engine(L);
  long t = engine_has_ready(e) ? 0 : engine_timeout_ms(e);  /* undelivered events: now */
  if (t < 0) lua_pushnil(L);
  else lua_pushnumber(L, (lua_Number)t / 1000.0);
  return 1;
}

/* a single descriptor that becomes readable when any transfer has work: the
 * epoll descriptor (Linux); nil elsewhere */
static int l_fd(lua_State *L) {
  engine *e = get_engine(L);
  if (e->epfd >= 0) lua_pushinteger(L, e->epfd);
  else lua_pushnil(L);
  return 1;
}

/* the sockets libcurl watches: { {fd = n, read = bool, write = bool}, ... } */
static int l_fds(lua_State *L) {
  engine *e = get_engine(L);
  sockinfo *si;
  int i = 0;
  lua_createtable(L, e->nsocks, 0);
  for (si = e->socks; si; si = si->next) {
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, (lua_Integer)si->fd);
    lua_setfield(L, -2, "fd");
    lua_pushboolean(L, (si->what & CURL_POLL_IN) != 0);
    lua_setfield(L, -2, "read");
    lua_pushboolean(L, (si->what & CURL_POLL_OUT) != 0);
    lua_setfield(L, -2, "write");
    lua_rawseti(L, -2, ++i);
  }
  return 1;
}

/* monotonic seconds, microsecond resolution */
static int l_now(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)(ts.tv_nsec / 1000) / 1e6);
  return 1;
}

/* core.inject("dispatch_nomem"): the next dispatch fails as if out of memory while it
 * builds an event (outside any callback). For specs: the engine must stay usable. */
static int l_inject(lua_State *L) {
  engine *e = get_engine(L);
  static const char *const faults[] = {"none", "dispatch_nomem", NULL};
  e->inject = luaL_checkoption(L, 1, NULL, faults);
  return 0;
}

/* what the engine has seen: { inflight =, connections =, stale_connections =, anchored = } */
static int l_stats(lua_State *L) {
  engine *e = get_engine(L);
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, e->nreq);
  lua_setfield(L, -2, "inflight");
  lua_pushinteger(L, e->nconns);
  lua_setfield(L, -2, "connections");
  lua_pushinteger(L, (lua_Integer)e->stale_conns);
  lua_setfield(L, -2, "stale_connections");
  lua_pushboolean(L, engine_has_ready(e));
  lua_setfield(L, -2, "queued");
  lua_getuservalue(L, lua_upvalueindex(1));
  {
    lua_Integer n = 0;
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      n++;
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "anchored");
  }
  return 1;
}

static int l_dispatching(lua_State *L) {
  lua_pushboolean(L, get_engine(L)->dispatching > 0);
  return 1;
}

static int e_gc(lua_State *L) {
  engine *e = (engine *)luaL_checkudata(L, 1, ENGINE_MT);
  if (!e->closed) {
    engine_close(e);
    curl_global_cleanup();
  }
  return 0;
}

static const luaL_Reg request_methods[] = {
  {"start", r_start},       {"cancel", r_cancel},   {"close", r_close},
  {"state", r_state},       {"status", r_status},   {"headers", r_headers},
  {"body", r_body},         {"result", r_result},   {"outcome", r_outcome},
  {"info", r_info},         {"error_json", r_error_json}, {"stream_state", r_stream_state},
  {"handlers", r_handlers}, {"hold", r_hold},         {NULL, NULL}};

static const luaL_Reg module_funcs[] = {
  {"request", l_request},   {"drive", l_drive},     {"inflight", l_inflight},
  {"timeout", l_timeout},   {"fd", l_fd},           {"fds", l_fds},
  {"now", l_now},           {"dispatching", l_dispatching}, {"stats", l_stats},
  {"inject", l_inject},
  {"json_decode", ljson_decode},
  {NULL, NULL}};

LLMCHAT_EXPORT int luaopen_llmchat_core(lua_State *L);

LLMCHAT_EXPORT int luaopen_llmchat_core(lua_State *L) {
  engine *e;
  /* one engine per Lua state: loading the module again (package.loaded
   * cleared) finds the same one, so requests never outlive their engine */
  lua_getfield(L, LUA_REGISTRYINDEX, ENGINE_KEY);
  e = (engine *)luaL_testudata(L, -1, ENGINE_MT);
  if (!e || e->closed) {
    lua_pop(L, 1);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
      return luaL_error(L, "llmchat: libcurl failed to initialise");
    e = (engine *)lua_newuserdata(L, sizeof *e);
    memset(e, 0, sizeof *e);
    e->closed = 1;
    e->epfd = -1;
    if (luaL_newmetatable(L, ENGINE_MT)) {
      lua_pushcfunction(L, e_gc);
      lua_setfield(L, -2, "__gc");
      lua_pushliteral(L, ENGINE_MT);
      lua_setfield(L, -2, "__name");
    }
    lua_setmetatable(L, -2);
    lua_newtable(L);
    lua_setuservalue(L, -2);
    if (engine_init(e) != 0) {
      curl_global_cleanup();
      return luaL_error(L, "llmchat: could not create the engine (libcurl multi / epoll)");
    }
    e->closed = 0;
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, ENGINE_KEY);
  }
  /* engine userdata at -1: the upvalue of every function */

  luaL_newmetatable(L, REQUEST_MT);
  {
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, request_methods, 1);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index");
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, r_close, 1);
    lua_setfield(L, -2, "__gc");
#if LUA_VERSION_NUM >= 504
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, r_close, 1);
    lua_setfield(L, -2, "__close");
#endif
    lua_pushcfunction(L, r_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, REQUEST_MT);
    lua_setfield(L, -2, "__name");
  }
  lua_pop(L, 1);

  lua_newtable(L);
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, module_funcs, 1);
  lua_remove(L, -2);  /* the engine stays alive through the upvalues */

  lua_pushcfunction(L, ljson_encode);
  lua_setfield(L, -2, "json_encode");
  lua_pushcfunction(L, ljson_normalize);
  lua_setfield(L, -2, "json_normalize");
  lua_pushcfunction(L, lb64_encode);
  lua_setfield(L, -2, "base64");
  lua_pushcfunction(L, lb64_floats);
  lua_setfield(L, -2, "base64_floats");
  llmchat_open_sse(L);
  lua_setfield(L, -2, "sse");
  llmchat_open_stream(L);
  lua_setfield(L, -2, "stream");
  lua_pushliteral(L, LLMCHAT_VERSION);
  lua_setfield(L, -2, "version");
  lua_pushstring(L, curl_version_info(CURLVERSION_NOW)->version);
  lua_setfield(L, -2, "curl_version");
  return 1;
}

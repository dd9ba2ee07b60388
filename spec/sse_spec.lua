-- luacheck: std +busted
-- The SSE parser (llmchat.core.sse / llmchat.sse): WHATWG event-stream rules, input split
-- at any byte, the recorded-style fixtures in spec/fixtures/*.sse, limits and the object API.
local core = require("llmchat.core")
local sse = core.sse

local FIXTURES = (debug.getinfo(1, "S").source:match("^@(.*)[/\\]") or "spec") .. "/fixtures/"

local function read_fixture(name)
  local f = assert(io.open(FIXTURES .. name, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

-- One comparable string per event list (binary-safe, cheap to compare thousands of times).
local function render(events)
  local out = {}
  for i, e in ipairs(events) do
    out[i] = e.event .. "\0" .. e.data .. "\0" .. e.id .. "\0" .. tostring(e.retry) .. "\1"
  end
  return table.concat(out)
end

local function append(all, events)
  for _, e in ipairs(events) do all[#all + 1] = e end
end

-- Feeds the pieces in order, then finishes; returns all events (and the error, if any).
local function parse_pieces(pieces, opts)
  local p = sse.parser(opts)
  local all = {}
  for _, piece in ipairs(pieces) do
    local events, err, partial = p:feed(piece)
    if not events then
      append(all, partial)
      p:close()
      return all, err
    end
    append(all, events)
  end
  local events, err = p:finish()
  p:close()
  if not events then return all, err end
  append(all, events)
  return all
end

local function parse(s, opts) return parse_pieces({ s }, opts) end

local function bytes(s)
  local t = {}
  for i = 1, #s do t[i] = s:sub(i, i) end
  return t
end

-- The same events whole, one byte at a time, and split in two at every offset.
local function check_splits(s, opts)
  local whole, werr = parse(s, opts)
  local want = render(whole)
  local got, err = parse_pieces(bytes(s), opts)
  assert.equal(want, render(got), "byte by byte")
  assert.equal(werr, err)
  for cut = 1, #s - 1 do
    got, err = parse_pieces({ s:sub(1, cut), s:sub(cut + 1) }, opts)
    if render(got) ~= want or err ~= werr then
      error(("split at byte %d of %d differs from feeding whole"):format(cut, #s))
    end
  end
  return whole, werr
end

-- Expected events given as { {event, data, id, retry}, ... }; checked under every split.
local function expect(s, want, opts)
  local events = check_splits(s, opts)
  local norm = {}
  for i, w in ipairs(want) do
    norm[i] = { event = w[1], data = w[2], id = w[3] or "", retry = w[4] }
  end
  assert.same(norm, events)
end

describe("sse parser", function()
  describe("fields", function()
    it("dispatches a data line on a blank line, type message, empty id", function()
      expect("data: hello\n\n", { { "message", "hello" } })
    end)

    it("strips exactly one leading space from the value", function()
      expect("data:hello\n\n", { { "message", "hello" } })
      expect("data:  two\n\n", { { "message", " two" } })
      expect("data:\tx\n\n", { { "message", "\tx" } })
    end)

    it("ends the field name at the first colon", function()
      expect("data: a:b: c\n\n", { { "message", "a:b: c" } })
    end)

    it("joins data lines with \\n and removes one trailing \\n", function()
      expect("data: a\ndata: b\n\n", { { "message", "a\nb" } })
      expect("data: a\ndata:\n\n", { { "message", "a\n" } })
      expect("data:\ndata:\n\n", { { "message", "\n" } })
    end)

    it("treats a line without colon as a field with an empty value", function()
      expect("data\n\n", { { "message", "" } })
      expect("data\ndata\n\n", { { "message", "\n" } })
    end)

    it("ignores comments and unknown or wrongly cased fields", function()
      expect(": OPENROUTER PROCESSING\n\n:\ndata: 1\n: x\n\n", { { "message", "1" } })
      expect("Data: 1\nDATA: 2\ndata : 3\nfoo: 4\n\n", {})
      expect("foo\ndata: 1\nbar: baz\n\n", { { "message", "1" } })
    end)

    it("sets the event type; empty means message; reset after each dispatch", function()
      expect("event: ping\ndata: 1\n\ndata: 2\n\n", { { "ping", "1" }, { "message", "2" } })
      expect("event:\ndata: 1\n\n", { { "message", "1" } })
      expect("event: a\nevent: b\ndata: 1\n\n", { { "b", "1" } })
    end)

    it("dispatches nothing for a block without data, and resets the event type", function()
      expect("event: lost\n\ndata: 1\n\n", { { "message", "1" } })
      expect("\n\n\n\n", {})
      expect("event: e\nid: 1\nretry: 5\n\n", {})
    end)

    it("keeps the last event id across events until changed", function()
      expect("id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\nid\ndata: d\n\n", {
        { "message", "a", "1" }, { "message", "b", "1" }, { "message", "c", "2" },
        { "message", "d", "" },
      })
      expect("id: 7\n\ndata: a\n\n", { { "message", "a", "7" } })
    end)

    it("ignores an id containing NUL", function()
      expect("id: 1\ndata: a\n\nid: 2\0x\ndata: b\n\n",
        { { "message", "a", "1" }, { "message", "b", "1" } })
    end)

    it("takes retry only when it is all ASCII digits", function()
      expect("retry: 3000\ndata: a\n\nretry: 12x\ndata: b\n\nretry:\ndata: c\n\n" ..
        "retry: -1\ndata: d\n\nretry: 250\ndata: e\n\n", {
        { "message", "a", "", 3000 }, { "message", "b", "", 3000 }, { "message", "c", "", 3000 },
        { "message", "d", "", 3000 }, { "message", "e", "", 250 },
      })
      expect("data: a\n\n", { { "message", "a", "", nil } })
    end)

    it("passes UTF-8 and arbitrary bytes through untouched", function()
      expect("event: café\ndata: 🌕 ça\0va\n\n", { { "café", "🌕 ça\0va" } })
    end)
  end)

  describe("line endings", function()
    it("accepts LF, CR and CRLF, mixed", function()
      expect("data: a\r\n\r\n", { { "message", "a" } })
      expect("data: a\r\rdata: b\n\n", { { "message", "a" }, { "message", "b" } })
      expect("data: a\r\ndata: b\r\n\r\n", { { "message", "a\nb" } })
      expect("data: a\n\rdata: b\r\n\n", { { "message", "a" }, { "message", "b" } })
      expect("data: a\r\r\n", { { "message", "a" } })
    end)

    it("treats a CR ending one feed and an LF starting the next as one line end", function()
      local events = parse_pieces({ "data: a\r", "\ndata: b\r", "\n\r", "\n" })
      assert.equal(1, #events)
      assert.equal("a\nb", events[1].data)
    end)
  end)

  describe("BOM", function()
    it("drops one UTF-8 BOM at the very start, even split across feeds", function()
      expect("\239\187\191data: a\n\n", { { "message", "a" } })
      local events = parse_pieces({ "\239", "\187", "\191", "data: a\n\n" })
      assert.same({ { event = "message", data = "a", id = "" } }, events)
    end)

    it("drops only the first BOM, and none later in the stream", function()
      expect("\239\187\191\239\187\191data: a\n\ndata: b\n\n", { { "message", "b" } })
      expect("data: \239\187\191a\n\n", { { "message", "\239\187\191a" } })
    end)

    it("keeps the bytes of a partial BOM as part of the first line", function()
      expect("\239\187data: a\n\ndata: b\n\n", { { "message", "b" } })
      expect("\239\ndata: a\n\n", { { "message", "a" } })
    end)
  end)

  describe("end of input", function()
    it("discards an incomplete block", function()
      expect("data: a\n\ndata: b\n", { { "message", "a" } })
      expect("data: a\n\ndata: b", { { "message", "a" } })
      local p = sse.parser()
      assert.same({}, p:feed("data: x\n"))
      assert.same({}, p:finish())
      assert.same({}, p:finish()) -- idempotent
    end)
  end)

  describe("limits", function()
    it("accepts a line of exactly max_line bytes and rejects one more", function()
      expect("data:123\n\n", { { "message", "123" } }, { max_line = 8 })
      local events, err = parse("data:1\n\ndata:1234\n\n", { max_line = 8 })
      assert.equal("sse: line exceeds 8 bytes", err)
      assert.equal(1, #events)
    end)

    it("fails on a too-long line before its end arrives, and stays failed", function()
      local p = sse.parser{ max_line = 16 }
      assert.same({}, p:feed("data: 0123456789"))
      local events, err, partial = p:feed("abcdef")
      assert.is_nil(events)
      assert.equal("sse: line exceeds 16 bytes", err)
      assert.same({}, partial)
      events, err = p:feed("\n\ndata: ok\n\n")
      assert.is_nil(events)
      assert.equal("sse: line exceeds 16 bytes", err)
      events, err = p:finish()
      assert.is_nil(events)
      assert.equal("sse: line exceeds 16 bytes", err)
    end)

    it("returns the events parsed before the error as a third value", function()
      local p = sse.parser{ max_line = 10 }
      local events, err, partial = p:feed("data: 1\n\ndata: 2\n\ndata: 0123456789\n\n")
      assert.is_nil(events)
      assert.equal("sse: line exceeds 10 bytes", err)
      assert.equal(2, #partial)
      assert.equal("2", partial[2].data)
    end)

    it("bounds the data buffer of a block of many lines by the same cap", function()
      expect("data:abc\ndata:def\n\n", { { "message", "abc\ndef" } }, { max_line = 8 })
      local _, err = check_splits("data:abc\ndata:defg\n\n", { max_line = 8 })
      assert.equal("sse: line exceeds 8 bytes", err)
      local many = string.rep("data: 0123456789\n", 200) .. "\n"
      local events, err2 = parse(many, { max_line = 1024 })
      assert.equal("sse: line exceeds 1024 bytes", err2)
      assert.same({}, events)
    end)

    it("has a 16 MiB default", function()
      local big = string.rep("x", 1024 * 1024)
      local events = parse("data: " .. big .. "\n\n")
      assert.equal(#big, #events[1].data)
    end)
  end)

  describe("recorded streams", function()
    local fixtures = {
      "openai_chat.sse", "openai_tools.sse", "openrouter.sse", "openrouter_error.sse",
      "azure_crlf.sse", "responses.sse",
    }
    for _, name in ipairs(fixtures) do
      it(name .. " gives the same events split at every byte and byte by byte", function()
        local s = read_fixture(name)
        local events, err = check_splits(s)
        assert.is_nil(err)
        assert.truthy(#events > 0)
      end)
    end

    it("openai_chat.sse: chunks then [DONE]", function()
      local events = parse(read_fixture("openai_chat.sse"))
      assert.equal(31, #events)
      for i = 1, #events - 1 do
        assert.equal("message", events[i].event)
        assert.truthy(events[i].data:find('^{"id":"chatcmpl%-'))
      end
      assert.equal("[DONE]", events[#events].data)
    end)

    it("openrouter.sse: processing comments produce no events", function()
      local events = parse(read_fixture("openrouter.sse"))
      assert.equal(10, #events)
      for _, e in ipairs(events) do assert.falsy(e.data:find("OPENROUTER")) end
    end)

    it("azure_crlf.sse: CRLF endings, prompt_filter_results first", function()
      local s = read_fixture("azure_crlf.sse")
      assert.truthy(s:find("\r\n\r\n", 1, true))
      local events = parse(s)
      assert.truthy(events[1].data:find('"prompt_filter_results"', 1, true))
      for _, e in ipairs(events) do assert.falsy(e.data:find("[\r\n]")) end
      assert.equal("[DONE]", events[#events].data)
    end)

    it("responses.sse: typed events with event: names, no [DONE]", function()
      local events = parse(read_fixture("responses.sse"))
      assert.equal("response.created", events[1].event)
      assert.equal("response.completed", events[#events].event)
      local text = {}
      for _, e in ipairs(events) do
        assert.truthy(e.data:find('"type":"' .. e.event .. '"', 1, true))
        if e.event == "response.output_text.delta" then
          text[#text + 1] = e.data:match('"delta":"([^"]*)"')
        end
      end
      assert.equal("Hi there! How can I help?", table.concat(text))
    end)
  end)

  describe("object", function()
    it("has a metatable named llmchat.sse.parser", function()
      local p = sse.parser()
      assert.equal("llmchat.sse.parser", getmetatable(p).__name)
      assert.truthy(tostring(p):find("llmchat.sse.parser", 1, true))
      p:close()
    end)

    it("raises on wrong argument types", function()
      local p = sse.parser()
      assert.has_error(function() p:feed({}) end)
      assert.has_error(function() p:feed() end)
      assert.has_error(function() p.feed("data: x\n\n") end)
      assert.has_error(function() sse.parser("max_line") end)
      assert.has_error(function() sse.parser{ max_line = 0 } end)
      assert.has_error(function() sse.parser{ max_line = "big" } end)
      p:close()
    end)

    it("raises when used after close; close is idempotent", function()
      local p = sse.parser()
      p:close()
      p:close()
      assert.has_error(function() p:feed("data: x\n\n") end, "attempt to use a closed sse parser")
      assert.has_error(function() p:finish() end, "attempt to use a closed sse parser")
      assert.truthy(tostring(p):find("closed"))
    end)

    it("raises on feed after finish", function()
      local p = sse.parser()
      p:finish()
      assert.has_error(function() p:feed("data: x\n\n") end, "sse parser: feed after finish")
    end)

    it("keeps state between feeds and returns only the new events", function()
      local p = sse.parser()
      assert.same({}, p:feed("data: a"))
      assert.same({ { event = "message", data = "a", id = "" } }, p:feed("\n\n"))
      assert.same({}, p:feed(""))
      assert.same({ { event = "message", data = "b", id = "" } }, p:feed("data: b\n\n"))
      p:close()
    end)

    if _VERSION == "Lua 5.4" then
      it("supports to-be-closed variables", function()
        local chunk = assert(load([[
          local sse = ...
          local keep
          do
            local p <close> = sse.parser()
            keep = p
          end
          return keep
        ]]))
        local p = chunk(sse)
        assert.has_error(function() p:feed("x") end, "attempt to use a closed sse parser")
      end)
    else
      it("closes with p:close(), the portable form where there is no <close>", function()
        local p = sse.parser()
        assert.same({ { event = "message", data = "a", id = "" } }, p:feed("data: a\n\n"))
        p:close()
        p:close()  -- idempotent
        assert.has_error(function() p:feed("x") end, "attempt to use a closed sse parser")
      end)
    end

    it("is also llmchat.sse", function()
      local ok, llmchat = pcall(require, "llmchat")
      if ok then assert.equal(sse, llmchat.sse) end
    end)
  end)
end)

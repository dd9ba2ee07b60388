-- Stream assembly in C (src/stream.c, rules in src/stream.h), through core.stream.assembler().
local core = require("llmchat.core")
local cjson = require("cjson")

local function chunk(t)
  -- a chunk built from a Lua table; fields not given are left out
  return cjson.encode(t)
end

-- feeds every JSON text to a new assembler; returns the result and all events as
-- { text = ..., ev = ... } in order
local function run(list, mt)
  local a = core.stream.assembler(mt)
  local events = {}
  for i, json in ipairs(list) do
    local deltas, err = a:chunk(json)
    assert(deltas, ("chunk %d: %s"):format(i, tostring(err)))
    for _, d in ipairs(deltas) do events[#events + 1] = { text = d[1], ev = d[2] } end
  end
  local r = a:result()
  a:close()
  return r, events
end

local function delta(d, extra)
  local c = { index = 0, delta = d, finish_reason = cjson.null }
  for k, v in pairs(extra or {}) do c[k] = v end
  return c
end

describe("stream assembly", function()
  it("exposes core.stream.assembler", function()
    assert.is_function(core.stream.assembler)
  end)

  describe("text deltas", function()
    it("concatenates content, reasoning_content, reasoning and refusal per choice", function()
      local r = run({
        [[{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1744186429,"model":"gpt-4o",]] ..
          [["system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"role":"assistant","content":""},]] ..
          [["logprobs":null,"finish_reason":null}],"usage":null}]],
        chunk{ choices = { delta{ reasoning_content = "Think" } } },
        chunk{ choices = { delta{ reasoning = "ing." } } },
        chunk{ choices = { delta{ content = "Hel" } } },
        chunk{ choices = { delta{ content = "lo" } } },
        chunk{ choices = { delta{ refusal = "I can" } } },
        chunk{ choices = { delta{ refusal = "not." } } },
      })
      local c = r.choices[1]
      assert.equal(0, c.index)
      assert.equal("assistant", c.role)
      assert.equal("Hello", c.content)
      assert.equal("Thinking.", c.reasoning)
      assert.equal("I cannot.", c.refusal)
      assert.equal(7, r.chunks)
    end)

    it("takes one of reasoning_content / reasoning when a delta carries both", function()
      local r = run({
        [[{"choices":[{"delta":{"reasoning_content":"a","reasoning":"a"}}]}]],
        [[{"choices":[{"delta":{"reasoning_content":"","reasoning":"b"}}]}]],
        [[{"choices":[{"delta":{"reasoning_content":"c","reasoning":null}}]}]],
      })
      assert.equal("abc", r.choices[1].reasoning)
    end)

    it("leaves a text nil until a string arrives, and keeps an empty one", function()
      local r = run({ [[{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}]] })
      assert.equal("", r.choices[1].content)
      assert.is_nil(r.choices[1].reasoning)
      assert.is_nil(r.choices[1].refusal)
    end)

    it("decodes escapes, surrogate pairs and keeps raw UTF-8 bytes", function()
      -- bytes as decimal escapes: Lua 5.1 reads "\x41" as "x41"
      local r = run({
        [[{"choices":[{"delta":{"content":"a\"b\\c\/d\b\f\n\r\t\u00e9\u20ac\ud83d\ude00\u0000z"}}]}]],
        '{"choices":[{"delta":{"content":"\255\254 caf\195\169"}}]}',
      })
      assert.equal('a"b\\c/d\b\f\n\r\t\195\169\226\130\172\240\159\152\128\0z\255\254 caf\195\169',
        r.choices[1].content)
    end)
  end)

  describe("tool calls", function()
    it("merges fragments by index, in order of first appearance, interleaved", function()
      local r = run({
        chunk{ choices = { delta{ role = "assistant", content = cjson.null, tool_calls = {
          { index = 0, id = "call_a", type = "function", ["function"] = { name = "get_weather", arguments = "" } } } } } },
        chunk{ choices = { delta{ tool_calls = {
          { index = 1, id = "call_b", type = "function", ["function"] = { name = "get_time", arguments = "{\"tz\"" } } } } } },
        chunk{ choices = { delta{ tool_calls = { { index = 0, ["function"] = { arguments = "{\"city\":" } } } } } },
        chunk{ choices = { delta{ tool_calls = { { index = 1, ["function"] = { arguments = ":\"UTC\"}" } } } } } },
        chunk{ choices = { delta{ tool_calls = { { index = 0, ["function"] = { arguments = "\"Paris\"}" } } } } } },
        chunk{ choices = { delta({}, { finish_reason = "tool_calls" }) } },
      })
      local c = r.choices[1]
      assert.equal("tool_calls", c.finish_reason)
      assert.same({
        { index = 0, id = "call_a", type = "function", name = "get_weather", arguments = '{"city":"Paris"}' },
        { index = 1, id = "call_b", type = "function", name = "get_time", arguments = '{"tz":"UTC"}' },
      }, c.tool_calls)
    end)

    it("keeps calls apart when every call has index 0 but distinct ids", function()
      local r = run({
        [[{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"a","arguments":"{}"}}]}}]}]],
        [[{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c2","type":"function","function":{"name":"b","arguments":"{\"x\""}}]}}]}]],
        [[{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]}}]}]],
        [[{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c2","function":{"arguments":""}}]}}]}]],
      })
      local t = r.choices[1].tool_calls
      assert.equal(2, #t)
      assert.same({ index = 0, id = "c1", type = "function", name = "a", arguments = "{}" }, t[1])
      assert.same({ index = 0, id = "c2", type = "function", name = "b", arguments = '{"x":1}' }, t[2])
    end)

    it("handles providers that omit index: a new id starts a call, no id appends", function()
      local r = run({
        [[{"choices":[{"delta":{"tool_calls":[{"id":"c1","type":"function","function":{"name":"a","arguments":"{\"p\""}}]}}]}]],
        [[{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":":1}"}}]}}]}]],
        [[{"choices":[{"delta":{"tool_calls":[{"id":"c2","function":{"name":"b"}}]}}]}]],
        [[{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{}"}}]}}]}]],
        [[{"choices":[{"delta":{"tool_calls":[{"id":"c1","function":{"arguments":""}}]}}]}]],
      })
      local t = r.choices[1].tool_calls
      assert.equal(2, #t)
      assert.same({ id = "c1", type = "function", name = "a", arguments = '{"p":1}' }, t[1])
      assert.same({ id = "c2", type = "function", name = "b", arguments = "{}" }, t[2])
      assert.is_nil(t[1].index)
    end)

    it("appends an index-less, id-less fragment to the call touched last", function()
      local r = run({
        [[{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f"}},{"index":1,"id":"b","function":{"name":"g"}}]}}]}]],
        [[{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"["}}]}}]}]],
        [[{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"]"}}]}}]}]],
      })
      assert.equal("[]", r.choices[1].tool_calls[1].arguments)
      assert.equal("", r.choices[1].tool_calls[2].arguments)
    end)

    it("adopts an id that arrives after the call started without one", function()
      local r = run({
        [[{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{"}}]}}]}]],
        [[{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"late","function":{"arguments":"}"}}]}}]}]],
      })
      assert.same({ { index = 0, id = "late", type = "function", name = "f", arguments = "{}" } },
        r.choices[1].tool_calls)
    end)

    it("defaults type to function and arguments to the empty string", function()
      local r = run({ [[{"choices":[{"delta":{"tool_calls":[{"index":3,"id":"x","function":{"name":"n"}}]}}]}]] })
      assert.same({ { index = 3, id = "x", type = "function", name = "n", arguments = "" } }, r.choices[1].tool_calls)
    end)
  end)

  describe("choices", function()
    it("keeps n > 1 choices apart by index (missing index = 0), sorted by index", function()
      local r = run({
        [[{"choices":[{"index":2,"delta":{"content":"C"}},{"index":1,"delta":{"content":"B"}}]}]],
        [[{"choices":[{"delta":{"content":"A"}}]}]],
        [[{"choices":[{"index":1,"delta":{"content":"b"}},{"index":2,"delta":{"content":"c"},"finish_reason":"length"}]}]],
        [[{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}]],
      })
      assert.equal(3, #r.choices)
      assert.same({ 0, 1, 2 }, { r.choices[1].index, r.choices[2].index, r.choices[3].index })
      assert.same({ "Aa", "Bb", "Cc" }, { r.choices[1].content, r.choices[2].content, r.choices[3].content })
      assert.equal("stop", r.choices[1].finish_reason)
      assert.is_nil(r.choices[2].finish_reason)
      assert.equal("length", r.choices[3].finish_reason)
    end)

    it("never lets a later null or empty finish_reason erase one", function()
      local r = run({
        [[{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]}]],
        [[{"choices":[{"index":0,"delta":{},"finish_reason":null}]}]],
        [[{"choices":[{"index":0,"delta":{},"finish_reason":""}]}]],
        [[{"choices":[{"index":0,"delta":{}}]}]],
      })
      assert.equal("stop", r.choices[1].finish_reason)
    end)

    it("tolerates chunks without choices or with empty choices (Azure)", function()
      local r = run({
        [[{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":]] ..
          [=[[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]}]=],
        [[{"choices":[{"content_filter_results":{},"delta":{"role":"assistant","content":""},"finish_reason":null,]] ..
          [["index":0,"logprobs":null}],"created":1744186429,"id":"chatcmpl-A","model":"gpt-4o-2024-08-06",]] ..
          [["object":"chat.completion.chunk","system_fingerprint":"fp_x"}]],
        [[{"object":"chat.completion.chunk"}]],
        [[{"choices":[{"delta":{"content":"ok"},"index":0}],"created":1744186430,"id":"chatcmpl-B","model":"other"}]],
      })
      assert.equal(4, r.chunks)
      assert.equal("ok", r.choices[1].content)
      -- first non-empty values win: Azure's empty first chunk does not count
      assert.equal("chatcmpl-A", r.id)
      assert.equal("gpt-4o-2024-08-06", r.model)
      assert.equal(1744186429, r.created)
      assert.equal("fp_x", r.system_fingerprint)
    end)

    it("gives the same result when chunks share their first bytes (the prefix cache)", function()
      local pre = [[{"id":"chatcmpl-P","object":"chat.completion.chunk","created":7,"model":"m1",]]
      local list = {
        pre .. [["choices":[{"index":0,"delta":{"role":"assistant","content":"a"}}]}]],
        pre .. [["choices":[{"index":0,"delta":{"content":"b"}}],"usage":null}]],
        pre .. [["choices"]],                                  -- same bytes, then cut off
        -- a repeated key: the last one counts, as in cjson
        pre .. [["choices":[{"index":1,"delta":{"content":"x"}}],"choices":[{"index":0,"delta":{"content":"c"}}]}]],
        [[{"id":"chatcmpl-P","object":"chat.completion.chunk","created":7,"model":"m2",]] ..
          [["choices":[{"index":0,"delta":{"content":"d"}}]}]],
        pre .. [["choices":[{"index":0,"delta":{"content":"e"},"finish_reason":"stop"}]}]],
      }
      local a = core.stream.assembler()
      local texts = {}
      for i, json in ipairs(list) do
        local deltas, err = a:chunk(json)
        if i == 3 then
          assert.is_nil(deltas)
          assert.matches("invalid JSON", err)
        else
          assert(deltas, err)
          for _, d in ipairs(deltas) do texts[#texts + 1] = d[1] end
        end
      end
      local r = a:result()
      a:close()
      assert.same({ "a", "b", "c", "d", "e" }, texts)
      assert.equal("abcde", r.choices[1].content)
      assert.is_nil(r.choices[2])
      assert.equal("stop", r.choices[1].finish_reason)
      assert.equal("chatcmpl-P", r.id)
      assert.equal("m1", r.model)
      assert.equal(7, r.created)
      assert.equal(5, r.chunks)
    end)

    it("does not resume the prefix cache inside a number that goes on", function()
      local r, events = run({
        [[{"id":"x","created":1744,"choices":[{"index":0,"delta":{"content":"p"}}]}]],
        [[{"id":"x","created":1744186429,"choices":[{"index":0,"delta":{"content":"q"}}]}]],
        [[{"id":"x","created":1744 ,"choices":[{"index":0,"delta":{"content":"r"}}]}]],
      })
      assert.equal("pqr", r.choices[1].content)
      assert.equal(3, #events)
      assert.equal(1744, r.created)
    end)

    it("reports created as an integer", function()
      local r = run({ [[{"created":1744186429,"choices":[]}]] })
      assert.equal(1744186429, r.created)
      if math.type then assert.equal("integer", math.type(r.created)) end
    end)
  end)

  describe("usage", function()
    local u1 = '{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}'
    local u2 = '{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}'

    it("comes from a final chunk with empty choices (include_usage)", function()
      local r = run({
        [[{"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}],"usage":null}]],
        '{"choices":[],"usage":' .. u2 .. '}',
      })
      assert.equal(u2, r.usage_json)
    end)

    it("comes from the finish chunk", function()
      local r = run({ '{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":' .. u1 .. '}' })
      assert.equal(u1, r.usage_json)
    end)

    it("keeps the last non-null one when every chunk carries it, null never erases", function()
      local r = run({
        '{"choices":[{"delta":{"content":"a"}}],"usage":' .. u1 .. '}',
        '{"choices":[{"delta":{"content":"b"}}],"usage":' .. u2 .. '}',
        '{"choices":[{"delta":{}}],"usage":null}',
        '{"choices":[]}',
      })
      assert.equal(u2, r.usage_json)
    end)

    it("comes from x_groq.usage (Groq)", function()
      local r = run({
        [[{"id":"chatcmpl-g","choices":[{"index":0,"delta":{"content":"x"}}],"x_groq":{"id":"req_1"}}]],
        '{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"x_groq":{"id":"req_1","usage":' .. u1 .. '}}',
      })
      assert.equal(u1, r.usage_json)
    end)

    it("is the raw text of the object, whitespace and all", function()
      local raw = '{ "prompt_tokens" : 1 ,\n "x":[1, {"y":null}] }'
      local r = run({ '{"usage":' .. raw .. '}' })
      assert.equal(raw, r.usage_json)
      assert.same({ prompt_tokens = 1, x = { 1, { y = cjson.null } } }, cjson.decode(r.usage_json))
    end)

    it("is nil when no chunk had one", function()
      local r = run({ [[{"choices":[{"delta":{"content":"a"}}],"usage":null}]] })
      assert.is_nil(r.usage_json)
    end)
  end)

  describe("in-stream errors", function()
    it("keeps the raw JSON of a top-level error object (OpenRouter, HTTP 200)", function()
      local e = '{"message":"Provider returned error","code":502}'
      local r = run({
        [[{"choices":[{"index":0,"delta":{"content":"par"}}]}]],
        '{"error":' .. e .. ',"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}',
      })
      assert.equal(e, r.error_json)
      assert.equal("error", r.choices[1].finish_reason)
      assert.equal("par", r.choices[1].content)
    end)

    it("is nil without an error, and error:null is no error", function()
      local r = run({ [[{"error":null,"choices":[]}]] })
      assert.is_nil(r.error_json)
    end)
  end)

  describe("robustness", function()
    it("ignores unknown fields anywhere", function()
      local r = run({
        [=[{"zz":{"a":[1,2,{"b":"c"}]},"choices":[{"q":[[]],"index":0,"delta":{"content":"x","audio":{"id":"a"},]=] ..
          [=["annotations":[]},"logprobs":{"content":[]},"native_finish_reason":"STOP"}],"provider":"p"}]=],
      })
      assert.equal("x", r.choices[1].content)
    end)

    it("ignores fields of unexpected types without crashing or corrupting", function()
      local r = run({
        [[{"id":7,"model":{},"created":"soon","choices":[{"index":0,"delta":{"content":5}}]}]],
        [[{"choices":[{"index":0,"delta":{"content":{"text":"no"},"reasoning":[1],"refusal":true}}]}]],
        [[{"choices":[{"index":0,"delta":{"tool_calls":{"0":{"id":"x"}}}}]}]],
        [[{"choices":[{"index":0,"delta":{"tool_calls":[1,"x",null,[],{"index":"0","id":5,"function":"f"}]}}]}]],
        [[{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"ok","function":{"name":9,"arguments":{}}}]}}]}]],
        [[{"choices":{"index":0,"delta":{"content":"no"}}}]],
        [[{"choices":[1,"x",null,{"index":0,"delta":"content"},{"index":0,"delta":{"content":"yes"},"finish_reason":7}]}]],
        [[{"choices":[{"index":-1,"delta":{"content":"!"}},{"index":1.5,"delta":{"content":"?"}}]}]],
        [[{"usage":5,"error":true}]],
        "[1,2,3]", '"just a string"', "null",
      })
      assert.equal(12, r.chunks)
      assert.is_nil(r.id); assert.is_nil(r.model); assert.is_nil(r.created)
      assert.is_nil(r.usage_json); assert.is_nil(r.error_json)
      assert.equal(1, #r.choices)
      local c = r.choices[1]
      assert.equal("yes!?", c.content) -- an invalid index counts as absent: choice 0
      assert.is_nil(c.reasoning); assert.is_nil(c.refusal); assert.is_nil(c.finish_reason)
      -- {"index":"0","id":5,"function":"f"} carries nothing usable: skipped
      assert.same({ { index = 0, id = "ok", type = "function", arguments = "" } }, c.tool_calls)
    end)

    it("lets the last of duplicate keys win, at every level", function()
      local r = run({
        [[{"model":"a","model":"b","choices":[{"delta":{"content":"no"}}],"choices":[{"index":0,"delta":{"content":"1","content":"2"},"delta":{"content":"3"}}]}]],
        [[{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"t","function":{"name":"x"}}],]] ..
          [["tool_calls":[{"index":1,"id":"u","function":{"name":"y"},"function":{"name":"z"}}]}}]}]],
        [[{"x_groq":{"usage":{"a":1}},"x_groq":{}}]],
      })
      assert.equal("b", r.model)
      assert.equal("3", r.choices[1].content)
      assert.same({ { index = 1, id = "u", type = "function", name = "z", arguments = "" } }, r.choices[1].tool_calls)
      assert.is_nil(r.usage_json)
    end)

    it("matches keys spelled with escapes", function()
      local r = run({ [[{"choices":[{"d\u0065lta":{"con\u0074ent":"x"}}]}]] })
      assert.equal("x", r.choices[1].content)
    end)

    it("returns nil and a message for invalid JSON and leaves the state unchanged", function()
      local a = core.stream.assembler()
      assert.truthy(a:chunk([[{"choices":[{"delta":{"content":"a"}}]}]]))
      for _, bad in ipairs({
        "", " ", "{", [[{"choices":[{"delta":{"content":"b"}}]}x]], [[{"choices":[{"delta":{"content":"b}}]}]],
        [[{"choices":[{"delta":{"content":"b"}},]}]], [[{"choices":[{"delta":{"content":"\ud800"}}]}]],
        [[{"choices":[{"delta":{"content":"b","n":01}}]}]], [[{"choices":[{"delta":{"content":"b","n":1.}}]}]],
        '{"a":"x\0y"}', "{}\0", [[{"a":NaN}]], [[{'a':1}]],
      }) do
        local d, err = a:chunk(bad)
        assert.is_nil(d, bad)
        assert.matches("invalid JSON", err)
      end
      local r = a:result()
      assert.equal("a", r.choices[1].content)
      assert.equal(1, r.chunks)
      a:close()
    end)

    -- src/jscan.h documents where we differ from lua-cjson (strict) on purpose
    it("rejects numbers lua-cjson's strtod lets through (D1)", function()
      local cj = cjson.new()
      cj.decode_invalid_numbers(false)
      for _, n in ipairs({ "1.", "-.5", "1.e5", "0.e1", "-0." }) do
        local text = '{"created":' .. n .. "}"
        assert.is_true(pcall(cj.decode, text), n)
        local d, err = core.stream.assembler():chunk(text)
        assert.is_nil(d, n)
        assert.matches("invalid number at character 12", err)
      end
    end)

    it("rejects a NUL byte after the value, where lua-cjson stops reading (D2)", function()
      local d, err = core.stream.assembler():chunk('{"choices":[]}\0{garbage')
      assert.is_nil(d)
      assert.matches("trailing garbage after the JSON value at character 15", err)
    end)

    it("accepts raw control characters in strings, as lua-cjson does", function()
      local r = run({ '{"choices":[{"delta":{"content":"a\1b\31c\127"}}]}' })
      assert.equal("a\1b\31c\127", r.choices[1].content)
    end)

    it("enforces the nesting limit of lua-cjson (1000)", function()
      local a = core.stream.assembler()
      assert.truthy(a:chunk(("["):rep(1000) .. ("]"):rep(1000)))
      local d, err = a:chunk(("["):rep(1001) .. ("]"):rep(1001))
      assert.is_nil(d)
      assert.matches("nested", err)
      assert.truthy(a:chunk('{"x":' .. ("["):rep(999) .. ("]"):rep(999) .. "}"))
      assert.is_nil(a:chunk('{"x":' .. ("["):rep(1000) .. ("]"):rep(1000) .. "}"))
      a:close()
    end)

    it("skips choice elements and tool fragments that carry nothing", function()
      local r = run({
        [[{"choices":[{},{"logprobs":null},{"index":3,"delta":{"tool_calls":[{},{"index":0},{"index":0,"function":{}}]}}]}]],
      })
      assert.equal(1, #r.choices)
      assert.equal(3, r.choices[1].index)
      assert.is_nil(r.choices[1].tool_calls)
    end)

    it("caps the number of distinct choices", function()
      local list = {}
      for i = 0, 299 do list[#list + 1] = ('{"choices":[{"index":%d,"delta":{"content":"x"}}]}'):format(i) end
      local r = run(list)
      assert.equal(256, #r.choices)
      assert.equal(255, r.choices[256].index)
    end)
  end)

  describe("delta events", function()
    it("reports each delta with choice, kind, tool, id, name and the raw chunk", function()
      local c1 = [[{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}]]
      local c2 = [[{"choices":[{"index":0,"delta":{"reasoning_content":"hm","content":"Hi"}},{"index":1,"delta":{"refusal":"No"}}]}]]
      local c3 = [[{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c","type":"function",]] ..
        [["function":{"name":"f","arguments":""}},{"index":1,"id":"d","function":{"name":"g","arguments":"{"}}]}}]}]]
      local c4 = [[{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"}"}},{"index":0,"function":{"arguments":""}}]}}]}]]
      local _, ev = run({ c1, c2, c3, c4 })
      local got = {}
      for _, e in ipairs(ev) do
        got[#got + 1] = { e.text, e.ev.choice, e.ev.kind, e.ev.tool, e.ev.id, e.ev.name, e.ev.raw }
      end
      assert.same({
        { "hm", 1, "reasoning", nil, nil, nil, c2 },
        { "Hi", 1, "content", nil, nil, nil, c2 },
        { "No", 2, "refusal", nil, nil, nil, c2 },
        { "", 1, "tool_call", 1, "c", "f", c3 },
        { "{", 1, "tool_call", 2, "d", "g", c3 },
        { "}", 1, "tool_call", 2, nil, nil, c4 },
      }, got)
    end)

    it("makes no event for an empty content delta", function()
      local a = core.stream.assembler()
      assert.same({}, a:chunk([[{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}]]))
      assert.same({}, a:chunk([[{"choices":[]}]]))
      a:close()
    end)

    it("gives event tables the metatable passed to assembler()", function()
      local mt = { __index = function(t, k) if k == "chunk" then return cjson.decode(rawget(t, "raw")) end end }
      local a = core.stream.assembler(mt)
      local d = a:chunk([[{"id":"z","choices":[{"delta":{"content":"q"}}]}]])
      assert.equal(mt, getmetatable(d[1][2]))
      assert.equal("z", d[1][2].chunk.id)
      assert.is_nil(getmetatable(core.stream.assembler():chunk([[{"choices":[{"delta":{"content":"q"}}]}]])[1][2]))
      a:close()
    end)
  end)

  describe("object", function()
    it("closes idempotently and refuses use after close", function()
      local a = core.stream.assembler()
      assert.matches("^llmchat.assembler %(", tostring(a))
      a:close()
      a:close()
      assert.equal("llmchat.assembler (closed)", tostring(a))
      assert.has_error(function() a:chunk("{}") end, "attempt to use a closed assembler")
      assert.has_error(function() a:result() end)
      assert.equal("llmchat.assembler", getmetatable(a).__name)
    end)

    it("raises on a wrong argument type", function()
      local a = core.stream.assembler()
      assert.has_error(function() a:chunk({}) end)
      assert.has_error(function() core.stream.assembler(5) end)
      a:close()
    end)

    it("is collected without close", function()
      for _ = 1, 100 do core.stream.assembler():chunk([[{"choices":[{"delta":{"content":"q"}}]}]]) end
      collectgarbage(); collectgarbage()
    end)
  end)
end)

local json = require 'tdrl.json'

describe("json", function()
  it("round-trips nested values with sorted keys", function()
    local v = {b = {1, 2.5, "x"}, a = true, c = {d = "q\"\n\t\\"}, e = {}}
    local s = json.encode(v)
    spec.eq(s, '{"a":true,"b":[1,2.5,"x"],"c":{"d":"q\\"\\n\\t\\\\"},"e":[]}')
    local w = json.decode(s)
    spec.eq(w.b[2], 2.5); spec.eq(w.c.d, "q\"\n\t\\"); spec.eq(w.a, true)
    spec.eq(math.type(json.decode("[7]")[1]), "integer")
  end)
  it("decodes unicode escapes and numbers", function()
    spec.eq(json.decode('"\\u00e9\\ud83d\\ude00"'), "é😀")
    spec.eq(json.decode("-1.5e3"), -1500.0)
  end)
  it("names the byte offset of a syntax error", function()
    spec.raises(function() json.decode('{"a": 1,, }') end, "byte offset 8")
    spec.raises(function() json.decode('[1, 2') end, "json:")
    spec.raises(function() json.decode('"abc') end, "unterminated string")
  end)
  it("a number whose exponent is cut short is a syntax error, not a Lua error (found by fuzz_checkpoint)", function()
    for _, bad in ipairs({"1e", "1.e", "-1e+", "[0.5E-]"}) do
      local err = spec.raises(function() json.decode(bad) end, "json: bad number")
      spec.truthy(not err:find("attempt to", 1, true), err)
    end
  end)
end)

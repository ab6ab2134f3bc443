-- Shared by the encode differential test: dkjson.encode over tricky values, results hex-encoded.
-- Only single-key objects, arrays or keyorder, so the output never depends on pairs() order.
function EncodeCases(dkjson)
  local function hex(s)
    return (string.gsub(s, ".", function(c) return string.format("%02x", string.byte(c)) end))
  end
  local cycle = {}
  cycle[1] = cycle
  local cases = {
    function() return dkjson.encode("plain") end,
    function() return dkjson.encode("q\"b\\s/\b\f\n\r\t\0\1\31\127 end") end,
    function() return dkjson.encode("\226\128\168\226\128\169\194\173\239\187\191\216\128\225\158\180 é 日本 🚀") end,
    function() return dkjson.encode({ 1, 2.5, -0, 1e300, 0.1, 1 / 3, 2 ^ 53, -1e-300 }) end,
    function() return dkjson.encode({ 1 / 0, -1 / 0, 0 / 0 }) end,
    function() return dkjson.encode({ true, false, dkjson.null, "x" }) end,
    function() return dkjson.encode({}) end,
    function() return dkjson.encode(setmetatable({}, { __jsontype = "object" })) end,
    function() return dkjson.encode(setmetatable({}, { __jsontype = "array" })) end,
    function() return dkjson.encode({ [1] = "a", [3] = "c" }) end,
    function() return dkjson.encode({ [1] = "a", [20] = "t" }) end,
    function() return dkjson.encode({ n = 3, "a" }) end,
    function() return dkjson.encode({ { { {} } }, { key = { 1, { 2 } } } }) end,
    function() return dkjson.encode({ a = 1 }, { indent = true }) end,
    function() return dkjson.encode({ { b = { c = 1 } } }, { indent = true }) end,
    function()
      return dkjson.encode({ z = 1, a = 2, m = "x" }, { keyorder = { "z", "a", "m" } })
    end,
    function()
      return dkjson.encode(setmetatable({ b = 1, a = 2 }, { __jsonorder = { "b", "a" } }))
    end,
    function() return dkjson.encode({ [2.5] = "x" }) end,
    function() return dkjson.encode({ [true] = 1 }) end,
    function() return dkjson.encode({ print }) end,
    function() return dkjson.encode(cycle) end,
    function() return dkjson.encode(setmetatable({}, { __tojson = function() return "RAW" end })) end,
    function() return dkjson.encode({ f = print }, { exception = dkjson.encodeexception }) end,
    function() return dkjson.encode(42) end,
    function() return dkjson.encode(nil) end,
    function() return dkjson.quotestring("a\"b") end,
    function() return dkjson.version end,
  }
  local out = {}
  for i, case in ipairs(cases) do
    local ok, result = pcall(case)
    out[i] = (ok and "ok:" or "err:") .. hex(tostring(result))
  end
  return table.concat(out, ",")
end

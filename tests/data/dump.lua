-- Shared by the decode differential test: a canonical, byte-exact dump of what dkjson.decode
-- returned (type tags, metatable __jsontype, %.17g numbers, hex strings, sorted keys).
local function hex(s)
  return (string.gsub(s, ".", function(c) return string.format("%02x", string.byte(c)) end))
end

local dump
dump = function(v, null)
  local t = type(v)
  if t == "string" then return "s" .. hex(v) end
  if t == "number" then return "n" .. string.format("%.17g", v) end
  if t == "boolean" or t == "nil" then return tostring(v) end
  if t == "table" then
    if v == null then return "NULL" end
    local mt = getmetatable(v)
    local tag = mt and mt.__jsontype or "-"
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    local dumped = {}
    for i, k in ipairs(keys) do dumped[i] = dump(k, null) .. "=" .. dump(v[k], null) end
    table.sort(dumped)
    return "{" .. tag .. ":" .. table.concat(dumped, ",") .. "}"
  end
  return t
end

function DumpDecode(dkjson, text)
  local out = {}
  local v, pos, err = dkjson.decode(text, 1, nil)
  out[1] = dump(v) .. "|" .. tostring(pos) .. "|" .. tostring(err)
  v, pos, err = dkjson.decode(text, 1, dkjson.null)
  out[2] = dump(v, dkjson.null) .. "|" .. tostring(pos) .. "|" .. tostring(err)
  v, pos, err = dkjson.decode(text, 2, nil, nil)
  out[3] = dump(v) .. "|" .. tostring(pos) .. "|" .. tostring(err)
  return table.concat(out, "#")
end

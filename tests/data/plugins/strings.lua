package.path = package.path..";/bin/?.lua"
local dkjson = require("dkjson")

function GetWorkloadTypeAndName(metaJsonStr)
  local meta = dkjson.decode(metaJsonStr, 1, nil)
  local keys = {}
  for k in pairs(meta.labels or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  if #keys == 0 then return "", "" end
  local name = meta.name
  local short = string.sub(name, 1, 4)
  local at = string.find(name, "-", 1, true)
  local upper = string.upper(string.sub(name, -3))
  local words = {}
  for w in string.gmatch(keys[1], "%a+") do words[#words + 1] = w end
  local m = string.match(name, "^(%l+)") or "?"
  local label = meta.labels[keys[1]]
  return "StatefulSet", string.format("%s|%s|%s|%s|%s|%d|%s|%s", short, tostring(at), upper, table.concat(words, "."),
    m, #keys, string.rep("ab", 2, ","), string.len(label))
end

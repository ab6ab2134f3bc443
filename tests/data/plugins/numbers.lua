package.path = package.path..";/bin/?.lua"
local dkjson = require("dkjson")

function GetWorkloadTypeAndName(metaJsonStr)
  local meta = dkjson.decode(metaJsonStr, 1, nil)
  local ann = meta.annotations
  if not ann or not ann.replicas then return "", "" end
  local r = tonumber(ann.replicas)
  local big = tonumber(ann.big)
  local ratio = tonumber(ann.ratio)
  local parts = { tostring(r * 2), tostring(big), tostring(ratio * 3), tostring(1 / 3), tostring(2 ^ 53 + 1),
                  string.format("%.3f|%d|%5.1e", ratio, r, big), tostring(#metaJsonStr) }
  return "CustomNumbers", table.concat(parts, ",")
end

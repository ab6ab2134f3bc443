package.path = package.path..";/bin/?.lua"
local dkjson = require("dkjson")

function GetWorkloadTypeAndName(metaJsonStr)
  local meta = dkjson.decode(metaJsonStr, 1, dkjson.null)
  local ts = meta.creationTimestamp
  local fin = meta.finalizers
  if ts == dkjson.null then
    return "Job", "null-ts:" .. tostring(fin and #fin) .. ":" .. getmetatable(fin).__jsontype
  end
  local again = dkjson.decode(metaJsonStr)
  return "", again.name and "" or "x"
end

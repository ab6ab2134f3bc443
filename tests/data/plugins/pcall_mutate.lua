package.path = package.path..";/bin/?.lua"
local dkjson = require("dkjson")

function GetWorkloadTypeAndName(metaJsonStr)
  local meta = dkjson.decode(metaJsonStr, 1, nil)
  meta.labels = meta.labels or {}
  meta.labels.mutated = "yes"
  local ok, err = pcall(function() return meta.nothing.here end)
  local second = dkjson.decode(metaJsonStr, 1, nil)
  local clean = second.labels == nil or second.labels.mutated == nil
  if meta.namespace == "shop" then
    return "ReplicaSet", tostring(ok) .. ":" .. tostring(clean) .. ":" .. string.gsub(err, "^.-:%d+: ", "")
  end
  return "", ""
end

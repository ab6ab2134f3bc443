package.path = package.path..";/bin/?.lua"
local dkjson = require("dkjson")

local function first_two(list)
  return unpack(list, 1, 2)
end

function GetWorkloadTypeAndName(metaJsonStr)
  local meta = dkjson.decode(metaJsonStr, 1, nil)
  local owners = meta.ownerReferences
  if owners == nil or #owners == 0 then return "", "" end
  local a, b = first_two(owners)
  local n = select("#", unpack(owners))
  if b ~= nil then
    return "Job", a.name .. "+" .. b.kind .. "#" .. tostring(n)
  end
  return "", ""
end

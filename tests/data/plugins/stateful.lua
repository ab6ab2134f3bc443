package.path = package.path..";/bin/?.lua"
local dkjson = require("dkjson")

seen = 0
local names = {}

function GetWorkloadTypeAndName(metaJsonStr)
  seen = seen + 1
  local meta = dkjson.decode(metaJsonStr, 1, nil)
  names[#names + 1] = meta.name
  if seen % 3 == 0 then
    return "Deployment", "third-" .. seen .. "-" .. #names
  end
  return "", ""
end

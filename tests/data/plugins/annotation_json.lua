package.path = package.path..";/bin/?.lua"
local dkjson = require("dkjson")

-- Workload given as JSON inside an annotation; report decode errors as the name.
function GetWorkloadTypeAndName(metaJsonStr)
  local meta = dkjson.decode(metaJsonStr, 1, nil)
  local raw = meta.annotations and meta.annotations["acme.io/owner"]
  if not raw then return "", "" end
  local owner, pos, err = dkjson.decode(raw, 1, nil)
  if err then
    return "Invalid", err .. " @" .. pos
  end
  return owner.kind, owner.name .. "@" .. pos
end

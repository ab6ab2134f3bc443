package.path = package.path..";/bin/?.lua"
local dkjson = require("dkjson")

-- ReplicaSet "web-7d4b9c6f5" belongs to Deployment "web": strip the pod-template-hash.
function GetWorkloadTypeAndName(metaJsonStr)
  local meta = dkjson.decode(metaJsonStr, 1, nil)
  for i, owner in ipairs(meta.ownerReferences or {}) do
    if owner.kind == "ReplicaSet" then
      local name, count = string.gsub(owner.name, "%-[%w]+$", "")
      return "deployment", name .. ":" .. count .. ":" .. i
    end
  end
  return "", ""
end

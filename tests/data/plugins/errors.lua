package.path = package.path..";/bin/?.lua"
local dkjson = require("dkjson")

function GetWorkloadTypeAndName(metaJsonStr)
  local meta = dkjson.decode(metaJsonStr, 1, nil)
  if meta.namespace == "kube-system" then
    error("refusing system pods")
  end
  if meta.namespace == "nums" then
    error({ code = 42 })
  end
  if meta.namespace == "long" then
    error(17)
  end
  -- indexing a missing table: a runtime error with the line number
  local app = meta.labels.app
  return "Deployment", string.upper(app)
end

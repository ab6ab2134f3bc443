package.path = package.path..";/bin/?.lua"
local dkjson = require("dkjson")

function GetWorkloadTypeAndName(metaJsonStr)
  local meta = dkjson.decode(metaJsonStr, 1, nil)
  local ns = meta.namespace
  if ns == "default" then return 1, 2 end
  if ns == "shop" then return "Deployment" end
  if ns == "batch" then return "", "x" end
  if ns == "kube-system" then return "Deployment", string.rep("n", 254) end
  if ns == "intl" then return "Deployment", string.rep("n", 253) end
  if ns == "ctl" then return "Deployment", meta.labels.tab end
  if ns == "long" then return "Deployment", "\127" end
  if ns == "nums" then return "DaemonSet", "\200\201" end
  return nil
end

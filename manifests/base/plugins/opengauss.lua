-- OpenGauss: Pods created by the openGauss operator are owned by an OpenGaussCluster
-- (opengauss.sig/v1), a kind DeepFlow does not know. Report them as a StatefulSet named after
-- the cluster, as in DeepFlow's "Custom Resource Tagging" guide. Every other Pod: "", "".
-- Runs unchanged on a DeepFlow server and in workload-tagger.
package.path = package.path..";/bin/?.lua"
local dkjson = require("dkjson")

function GetWorkloadTypeAndName(metaJsonStr)
    local meta = dkjson.decode(metaJsonStr, 1, nil)
    if type(meta) ~= "table" then
        return "", ""
    end
    local owners = meta["ownerReferences"]
    local first = type(owners) == "table" and owners[1] or nil
    if type(first) ~= "table" or tostring(first["kind"] or "") ~= "OpenGaussCluster" then
        return "", ""
    end
    return "StatefulSet", tostring(first["name"] or "")
end

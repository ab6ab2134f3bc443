-- A home-grown CRD: acme.io Pipelines start one Job-like "PipelineRun" per execution, named
-- "<pipeline>-run-<n>". Group the runs under the pipeline, reported as a Job.
package.path = package.path..";/bin/?.lua"
local dkjson = require("dkjson")

function GetWorkloadTypeAndName(metaJsonStr)
    local meta = dkjson.decode(metaJsonStr, 1, nil)
    if type(meta) ~= "table" or meta.ownerReferences == nil then
        return "", ""
    end
    for _, owner in ipairs(meta.ownerReferences) do
        local group = string.match(owner.apiVersion or "", "^([^/]+)/")
        if group == "acme.io" and owner.kind == "PipelineRun" then
            local pipeline = string.gsub(owner.name, "%-run%-%d+$", "")
            return "Job", pipeline
        end
    end
    return "", ""
end

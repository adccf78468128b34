"""The learning loop: annotations arrive by webhook (`intake`) and become corrections; when the policy says so, a
training stage (`trainer`) fits, calibrates and commits a candidate bundle (`training`) and promotes it only if it
holds its own on the frozen human holdout (`policy.gate`). Stages are durable jobs (`jobs`) run by `worker`."""

#!/usr/bin/env bash
# Stage the CLI for the GPU machine within the device call's 64 MiB carry (tree included): ../shared/gpu/stage.sh
# publishes it and packs Microsoft.NETCore.App; the CLI also references the ASP.NET Core framework (for `serve`), which
# would not fit, so the staged copy runs on Microsoft.NETCore.App alone with the Microsoft.Extensions.* assemblies it
# needs copied in (its deps.json dropped so the host loads every assembly in its folder), packed as .gpu/cli.tar.xz.
# `serve` is not available in that copy. Then: device call with carry [".gpu"]; the run scripts unpack it to /tmp/cli.
# WITH_GPUBENCH=1 also puts benchmarks/IlgpuTune.GpuBench's dll in that folder (it runs on the CLI's assemblies:
# `/tmp/dotnet/dotnet /tmp/cli/IlgpuTune.GpuBench.dll MODE ...`), so the kernel bench travels without a second app.
#   bash benchmarks/stage_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu/app .gpu/fair .gpu/cli.tar.xz .gpu/dotnet-runtime.tar.xz
../shared/gpu/stage.sh src/IlgpuTune.Cli/IlgpuTune.Cli.csproj
dn=$(dirname "$(readlink -f "$(command -v dotnet)")")
asp=$(ls -d "$dn"/shared/Microsoft.AspNetCore.App/*/ | sort -V | tail -1)
cli=.gpu/app/IlgpuTune.Cli
cp -n "$asp"/Microsoft.Extensions.*.dll "$cli"/
# ASP.NET's own extensions the CLI never loads (the carry has no room for them)
(cd "$cli" && rm -f Microsoft.Extensions.{Identity.Core,Identity.Stores,Http,Localization,Localization.Abstractions,ObjectPool,WebEncoders,Validation,Caching.Memory,Diagnostics.HealthChecks,Diagnostics.HealthChecks.Abstractions,Features,Configuration.Ini,Configuration.Xml,Configuration.KeyPerFile,FileProviders.Embedded,FileProviders.Composite}.dll)
rm -f "$cli"/ilgpu-tune.deps.json
if [[ -n "${WITH_GPUBENCH:-}" ]]; then
  dotnet build benchmarks/IlgpuTune.GpuBench -c Release --nologo -v q >&2
  gb=benchmarks/IlgpuTune.GpuBench/bin/Release/net10.0
  cp "$gb"/IlgpuTune.GpuBench.dll "$cli"/ && cp "$gb"/IlgpuTune.GpuBench.runtimeconfig.json "$cli"/
fi
find .gpu/app \( -name "*.pdb" -o -name "*.xml" \) -delete
python3 - "$cli/ilgpu-tune.runtimeconfig.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p)); ro = c["runtimeOptions"]
fws = ro.pop("frameworks", None) or [ro.pop("framework")]
ro["framework"] = next(f for f in fws if f["name"] == "Microsoft.NETCore.App")
json.dump(c, open(p, "w"), indent=2)
PY
mv "$cli" .gpu/cli && tar -C .gpu -cf - cli | xz -T2 -9e > .gpu/cli.tar.xz && rm -rf .gpu/cli .gpu/app .gpu/bench
# the runtime without its debugger support, at the strongest xz setting: the ~2 MB the carry needs next to the tree and
# a data set with two tokenizers
rt=$(mktemp -d) && tar -xJf .gpu/dotnet-runtime.tar.xz -C "$rt"
find "$rt" \( -name libmscordaccore.so -o -name libmscordbi.so -o -name createdump \) -delete
(cd "$rt" && tar -cf - .) | xz -T2 -9e > .gpu/dotnet-runtime.tar.xz && rm -rf "$rt"
du -sh .gpu

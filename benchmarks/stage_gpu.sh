#!/usr/bin/env bash
# Stage the CLI (and optionally GpuBench) for the GPU machine: ../shared/gpu/stage.sh, plus the ASP.NET Core shared
# framework in the runtime tarball (the CLI references it for `serve`; stage.sh packs Microsoft.NETCore.App only), minus
# symbols and XML docs (the device call carries at most 64 MiB with the tree). Then call the device tool with carry [".gpu"].
#   bash benchmarks/stage_gpu.sh [benchmarks/IlgpuTune.GpuBench/IlgpuTune.GpuBench.csproj]
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu/app .gpu/dotnet-runtime.tar.xz .gpu/fair
../shared/gpu/stage.sh src/IlgpuTune.Cli/IlgpuTune.Cli.csproj "$@"
dn=$(dirname "$(readlink -f "$(command -v dotnet)")")
net=$(ls -d "$dn"/shared/Microsoft.NETCore.App/*/ | sort -V | tail -1)
asp=$(ls -d "$dn"/shared/Microsoft.AspNetCore.App/*/ | sort -V | tail -1)
tar -C "$dn" -cf - dotnet host "shared/Microsoft.NETCore.App/$(basename "$net")" "shared/Microsoft.AspNetCore.App/$(basename "$asp")" \
  | xz -T2 -6 > .gpu/dotnet-runtime.tar.xz
find .gpu/app \( -name "*.pdb" -o -name "*.xml" \) -delete
du -sh .gpu

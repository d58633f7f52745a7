# Sourced by the GPU-machine run scripts (from the repository root): unpacks the .NET runtime and the CLI that
# benchmarks/stage_gpu.sh packed into .gpu/ (once per machine) and sets T, the command that runs `ilgpu-tune`.
[ -x /tmp/dotnet/dotnet ] || { mkdir -p /tmp/dotnet && tar -xJf .gpu/dotnet-runtime.tar.xz -C /tmp/dotnet; }
export DOTNET_ROOT=/tmp/dotnet
[ -f /tmp/cli/ilgpu-tune.dll ] || tar -xJf .gpu/cli.tar.xz -C /tmp
T="/tmp/dotnet/dotnet /tmp/cli/ilgpu-tune.dll"

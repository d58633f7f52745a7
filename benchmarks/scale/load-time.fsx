// Times ModelLoader.Load of a model folder on the managed CPU path as chat loads it (frozen weights as stored), and
// prints "loaded in S s" and the weights' device bytes. Run with the CLI's build output:
//   dotnet fsi benchmarks/scale/load-time.fsx FOLDER
#r "../../src/IlgpuTune.Cli/bin/Release/net10.0/ILGPU.dll"
#r "../../src/IlgpuTune.Cli/bin/Release/net10.0/IlgpuTune.Numerics.dll"
#r "../../src/IlgpuTune.Cli/bin/Release/net10.0/IlgpuTune.Kernels.dll"
#r "../../src/IlgpuTune.Cli/bin/Release/net10.0/IlgpuTune.Core.dll"
#r "../../src/IlgpuTune.Cli/bin/Release/net10.0/IlgpuTune.IO.dll"
#r "../../src/IlgpuTune.Cli/bin/Release/net10.0/IlgpuTune.Model.dll"
open IlgpuTune
let folder = fsi.CommandLineArgs.[1]
let device = Core.Device.Create("cpu")
let sw = System.Diagnostics.Stopwatch.StartNew()
let model = Model.ModelLoader.Load(folder, device, Numerics.DType.F32, System.Nullable(), true)
let q = model.QuantizedWeights.Values |> Seq.sumBy (fun w -> w.Bytes)
let dense = model.Parameters.Values |> Seq.sumBy (fun p -> p.Bytes)
printfn "loaded in %.2f s; NF4 %.0f MB, dense %.0f MB, allocated %.0f MB" sw.Elapsed.TotalSeconds (float q / 1e6) (float dense / 1e6) (float device.Allocator.AllocatedBytes / 1e6)

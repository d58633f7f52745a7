using Cocona;
using IlgpuTune.Cli;

var app = CoconaLiteLikeBuilder.Create(CliArgs.Normalize(args));
app.AddCommands<EngineCommands>();
app.AddCommands<TrainCommands>();
app.AddCommands<DataCommands>();
app.AddCommands<ChatCommands>();
app.Run();
return Environment.ExitCode;

using Cocona;
using IlgpuTune.Cli;

var app = CoconaLiteLikeBuilder.Create(CliArgs.Normalize(args));
app.AddCommands<EngineCommands>();
app.AddCommands<TrainCommands>();
return CliErrors.Run(app);

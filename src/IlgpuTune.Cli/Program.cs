using Cocona;
using IlgpuTune.Cli;

var app = CoconaLiteLikeBuilder.Create(args);
app.AddCommands<EngineCommands>();
app.AddCommands<ChatCommands>();
app.Run();

using IlgpuTune.Cli;

// Every verb runs inside the one error boundary: exit 0 ok, 1 a negative result, 2 a user mistake or the environment,
// 70 a bug (with a crash log), 130 interrupted (README "Exit codes").
Type[] commands = [typeof(EngineCommands), typeof(TrainCommands), typeof(DataCommands), typeof(ChatCommands), typeof(ServeCommands), typeof(ScoreCommands), typeof(DistributedCommands)];
return ErrorBoundary.Run(() =>
{
    string[] normalized = CliArgs.Normalize(args);
    if (CliUsage.Check(normalized, commands) is { } usage)
    {
        Console.Error.WriteLine($"error: {usage}");
        return ExitCodes.UserError;
    }
    int code = CoconaLiteLikeBuilder.Run(normalized, commands);
    // Cocona exits 129 for its help screen and for arguments it cannot bind (a missing argument, "--seed abc").
    return code == CoconaLiteLikeBuilder.CoconaUsageExit ? CliUsage.AsksForHelp(args) ? ExitCodes.Ok : ExitCodes.UserError : code;
});

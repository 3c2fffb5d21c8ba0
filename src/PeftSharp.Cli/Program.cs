using PeftSharp.Cli;
return CliApp.Run(args);

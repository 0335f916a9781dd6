"""One module per `styledrop` subcommand: register(parser) and run(args)."""

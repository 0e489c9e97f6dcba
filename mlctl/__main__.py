from mlctl.cli.app import main

main()

from stablecore.cli import main

main()

from nlmd.cli import main

main()

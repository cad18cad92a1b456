from dorch.cli import main

main()

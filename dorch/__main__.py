from dorch.main import main

main()

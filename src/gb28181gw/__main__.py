from gb28181gw.cli import main

main()

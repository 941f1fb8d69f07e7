from vt_models.cli import main

main()

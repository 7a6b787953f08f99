"""`python -m lambda_hat`: the lambda-hat command, where its script is not on PATH."""

from lambda_hat.cli import main

if __name__ == "__main__":
    main()

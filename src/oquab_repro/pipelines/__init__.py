"""One modular Kedro pipeline per thesis stage; ``find_pipelines`` discovers them."""

from rota.executors.local import LocalExecutor

NAME = "local"


def make_executor(tmp_path):
    return LocalExecutor()

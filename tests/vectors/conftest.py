def pytest_configure(config):
    config.addinivalue_line("markers", "llama_cpp: runs a real llama.cpp (llama-cpp-python) on our exported "
                                       "GGUF control vectors; select with -m llama_cpp")

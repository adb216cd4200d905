"""Built-in plugins: the fork adaptor, the fork and mpirun launch methods, host resources."""

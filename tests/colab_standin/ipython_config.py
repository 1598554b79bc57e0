# Colab's IPython configuration (colabtools), the settings the notebooks depend on.
c = get_config()  # noqa: F821
c.IPKernelApp.capture_fd_output = False
c.IPKernelApp.kernel_class = "google.colab._kernel.Kernel"
c.InteractiveShellApp.extensions = ["google.colab"]
c.InteractiveShellApp.reraise_ipython_extension_failures = True
c.HistoryManager.hist_file = ":memory:"

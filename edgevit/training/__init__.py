"""Training: settings and recipes (`settings`), the batches (`batches`), AdamW and the moving average
(`optimizer`), the compiled step (`step`), the run (`trainer`), what is fitted after it
(`calibrate`), and its files (`checkpoint`)."""

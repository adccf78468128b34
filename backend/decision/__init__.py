"""The pure decision core: voting, calibration, routing. No model or framework imports here."""

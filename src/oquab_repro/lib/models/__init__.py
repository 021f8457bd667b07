"""Network definitions, one module per family (AlexNet-shaped CNNs, DCGAN, conditional GANs)."""
